#!/usr/bin/env bash
# demo.sh - `make demo`, the README's first command: builds, creates a benign and a
# malicious PyTorch checkpoint with real torch, loads both with /usr/bin/python3
# under the preload (embedded default policy), shows the benign load succeeding and
# the malicious one refused with its explanation and audit record, and proves the
# payload's marker file was not created. Exits non-zero if anything is off.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
PY=/usr/bin/python3
if [ ! -x "$BUILD/safepickle" ] || [ ! -f "$BUILD/libsafepickle.so" ]; then
  make --no-print-directory BUILD="$BUILD" -j2 build
fi
SP="$BUILD/safepickle"
work=$(mktemp -d /tmp/safepickle-demo.XXXXXX)
trap 'rm -rf "$work"' EXIT
marker="$work/PAYLOAD_RAN"
audit="$work/audit.jsonl"
fail() { echo "demo: FAILED: $*" >&2; exit 1; }
say() { printf '\n\033[1m== %s\033[0m\n' "$*"; }

say "1. Building two checkpoints with real torch (no preload)"
"$PY" - "$work" "$marker" <<'EOF'
import os, sys
sys.path.insert(0, "test/integration")
import torch
from spgen import Reduce, touch_cmd
d, marker = sys.argv[1], sys.argv[2]
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
torch.save({"model": model.state_dict(), "epoch": 5}, os.path.join(d, "benign.pt"))
# The attacker's checkpoint: a normal state dict plus an object whose unpickling
# runs a shell command (here it only creates a marker file).
torch.save({"model": model.state_dict(), "epoch": 5,
            "extra": Reduce(os.system, (touch_cmd(marker),))}, os.path.join(d, "malicious.pt"))
print("  benign.pt     ", os.path.getsize(os.path.join(d, "benign.pt")), "bytes")
print("  malicious.pt  ", os.path.getsize(os.path.join(d, "malicious.pt")), "bytes (payload: touch %s)" % marker)
EOF

LOAD='import sys, torch
ck = torch.load(sys.argv[1])
print("  loaded:", sorted(ck), "epoch", ck["epoch"], "-", len(ck["model"]), "tensors")'

say "2. Loading the benign checkpoint:  safepickle run -- python3 -c 'torch.load(...)'"
"$SP" run --log "$audit" -- "$PY" -c "$LOAD" "$work/benign.pt" || fail "the benign checkpoint did not load"

say "3. Loading the malicious checkpoint the same way"
set +e
"$SP" run --log "$audit" -- "$PY" -c "$LOAD" "$work/malicious.pt" 2>"$work/err.txt"
rc=$?
set -e
sed 's/^/  /' "$work/err.txt" | grep -E 'safepickle:|Error' | head -5
[ $rc -ne 0 ] || fail "the malicious load was not refused"
grep -q '^safepickle: blocked .*malicious.pt: malicious:' "$work/err.txt" || fail "no safepickle explanation on stderr"

say "4. The audit record (JSON lines, $audit)"
"$PY" - "$audit" <<'EOF' || fail "no audit record for the refusal"
import json, sys
recs = [json.loads(l) for l in open(sys.argv[1])]
blk = [r for r in recs if r["action"] == "block" and r["path"].endswith("malicious.pt")]
assert blk, "no block record"
r = blk[-1]
show = {k: r[k] for k in ("time", "pid", "exe", "call", "path", "format", "verdict", "action", "reasons", "policy")}
show["callsite"] = r.get("callsite")
print(json.dumps(show, indent=2)[:3000])
EOF

say "5. Did the payload run?"
if [ -e "$marker" ]; then fail "the marker $marker exists: the payload ran"; fi
echo "  no: $marker does not exist"

say "6. Control: the same malicious load WITHOUT safepickle"
"$PY" -c "$LOAD" "$work/malicious.pt" >/dev/null 2>&1 || true
if [ -e "$marker" ]; then echo "  the payload ran: $marker was created (this is what safepickle prevented)"; rm -f "$marker"
else fail "control: the malicious checkpoint did not run its payload without the preload"; fi

say "demo: OK"
