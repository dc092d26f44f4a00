"""rtpolicy.py - policies for the layer tests: the shipped default policy with
the layer switches (file hooks, PEP 578 audit hook, behaviour veto) set.

The layer keys are looked up in policies/SCHEMA.md's shape once, here."""
import json
import os

from conftest import REPO

# The base policy (override with SAFEPICKLE_BASE_POLICY to run the layer tests
# against another shipped policy).
DEFAULT = os.environ.get("SAFEPICKLE_BASE_POLICY", os.path.join(REPO, "policies", "default.json"))

# spa_policy field -> path of the key in the policy JSON (policies/SCHEMA.md).
LAYER_KEYS = {
    "layer_file": ("layers", "file_hooks"),
    "layer_audit_hook": ("layers", "audit_hook"),
    "runtime_behaviour": ("layers", "runtime_behaviour"),
}


def load_default():
    with open(DEFAULT) as f:
        return json.load(f)



def write(dirpath, name="rt-test", audit_log=None, targets=None, actions=None, **switches):
    """Write the default policy with the given layer switches to dirpath and
    return its path. switches: layer_file, layer_audit_hook, runtime_behaviour;
    actions: {verdict: action} over the default's."""
    doc = load_default()
    doc["name"] = name
    if targets is not None:
        doc["targets"] = list(targets)
    if actions:
        doc["actions"].update(actions)
        name += "-" + "-".join("%s_%s" % kv for kv in sorted(actions.items()))
    for field, value in switches.items():
        path = LAYER_KEYS[field]
        node = doc
        for k in path[:-1]:
            node = node.setdefault(k, {})
        node[path[-1]] = bool(value)
    if audit_log is not None:
        doc["audit_log"] = audit_log
    p = os.path.join(str(dirpath), "%s-%s.json" % (name, "-".join(
        "%s%d" % (k, int(bool(v))) for k, v in sorted(switches.items()))))
    with open(p, "w") as f:
        json.dump(doc, f, indent=1)
    return p
