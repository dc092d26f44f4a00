"""test_data_keys.py - functions behind module keys the knowledge base judges data wholesale
(numpy.random, sklearn, scipy, decimal, ...) that write files or change process-wide state
(red team, session 8). Each was `safe` on 7554981, so under the preload it ran with the
file-write veto off; each is proven to act under the real loader and refused under the
preload now.

Not a generator: these instances were found by hand, by reading the packages' sources for
write calls, and by a one-off sweep (each of the 1,620 callables under the data keys that
a call with one string leaves allowed, called with no argument, 1 or True in a forked
child, comparing numpy's error, print and random state and dtype table, the decimal
context, sklearn's config, torch's defaults, pandas' options and scipy.special's error
state: 25 minutes here, too long for `make test`). analyzer/README.md says what is left.
"""
import json
import os
import struct
import subprocess

from conftest import LIB, PYTHON, clean_env, run_cli



def _s(x):
    b = x.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def _g(m, n):
    return _s(m) + _s(n) + b"\x93"


def _call(f, *args):
    return f + b"(" + b"".join(args) + b"tR"


# (name, pickle body, check after the load: true when the effect happened); the written
# files' paths are filled in per test
def _cases(tmp):
    npz, dot = os.path.join(tmp, "m.npz"), os.path.join(tmp, "tree.dot")
    tree = ("__import__('pickle').dumps(__import__('sklearn.tree', fromlist=['_']).DecisionTreeClassifier()"
            ".fit([[0], [1]], [0, 1]), 2)[2:-1]")
    return [
        ("decimal.setcontext", _call(_g("decimal", "setcontext"), _call(_g("decimal", "Context"), b"K\x02")),
         "__import__('decimal').getcontext().prec == 2"),
        ("BUILD on decimal.getcontext()", _call(_g("decimal", "getcontext")) + b"(N}(" + _s("prec") + b"K\x03ut" + b"b",
         "__import__('decimal').getcontext().prec == 3"),
        ("numpy.random.seed", _call(_g("numpy.random", "seed"), b"K\x07"),
         "__import__('numpy').random.get_state()[1][0] == 7"),
        ("numpy.random.set_bit_generator", _call(_g("numpy.random", "set_bit_generator"),
                                                 _call(_g("numpy.random", "PCG64"), b"K\x05")),
         "type(__import__('numpy').random.get_bit_generator()).__name__ == 'PCG64'"),
        ("sklearn.set_config", _call(_g("sklearn", "set_config"), b"\x88"),
         "__import__('sklearn').get_config()['assume_finite'] is True"),
        ("numpy.core.multiarray.set_typeDict", _call(_g("numpy.core.multiarray", "set_typeDict"), b"}"),
         "_typedict_broken()"),
        ("torch.nn.modules.module.register_module_forward_hook",
         _call(_g("torch.nn.modules.module", "register_module_forward_hook"), _g("builtins", "print")),
         "bool(__import__('torch.nn.modules.module', fromlist=['_'])._global_forward_hooks)"),
        ("numpy.core.umath.seterrobj", _call(_g("numpy.core.umath", "seterrobj"), b"](J\x00\x20\x00\x00K\x00Ne"),
         "__import__('numpy').geterr()['divide'] != 'warn'"),
        ("scipy.sparse.save_npz", _call(_g("scipy.sparse", "save_npz"), _s(npz),
                                        _call(_g("scipy.sparse", "eye"), b"K\x02")),
         "__import__('os').path.exists(%r)" % npz),
        ("sklearn.tree.export_graphviz", _call(_g("sklearn.tree", "export_graphviz"), b"TREE", _s(dot)),
         "__import__('os').path.exists(%r)" % dot),
    ], tree


LOADER = r'''
import json, pickle, sys
def _typedict_broken():
    import numpy
    try:
        numpy.dtype("float64")
        return False
    except Exception:
        return True
p, check = sys.argv[1], sys.argv[2]
try:
    pickle.load(open(p, "rb"))
except BaseException as e:
    print("EXC", type(e).__name__)
print("EFFECT" if eval(check) else "NONE")
'''


def _run(p, check, preload):
    env = clean_env()
    if preload:
        env["LD_PRELOAD"] = LIB
    r = subprocess.run([PYTHON, "-c", LOADER, p, check], env=env, capture_output=True, text=True, timeout=300)
    return r.stdout.strip().splitlines()[-1] if r.stdout.strip() else r.stderr[-300:], r.stderr


def test_data_key_writers_and_state_setters(tmp_path):
    cases, tree = _cases(str(tmp_path))
    tree_bytes = eval(tree)
    bad = []
    for k, (name, body, check) in enumerate(cases):
        if b"TREE" in body:
            body = body.replace(b"TREE", tree_bytes)
        p = tmp_path / ("c_%d.pkl" % k)
        p.write_bytes(b"\x80\x04" + body + b".")
        plain, err = _run(str(p), check, False)
        assert plain == "EFFECT", (name, plain, err[-500:])
        for f in tmp_path.iterdir():
            if f.suffix in (".npz", ".dot"):
                f.unlink()
        r = json.loads(run_cli("scan", "--format", "json", str(p)).stdout)["files"][0]
        pre, err = _run(str(p), check, True)
        if r["action"] != "block" or pre != "NONE":
            bad.append((name, r["verdict"], r["action"], pre))
    assert not bad, bad
