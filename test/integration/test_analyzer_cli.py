"""test_analyzer_cli.py - `safepickle scan` and `safepickle explain` on files
built from code: the JSON shape the README documents, IR entries with
offsets, stacked and broken streams, limits, usage and I/O errors."""
import json
import os
import pickle

from conftest import run_cli, run_py
from spgen import Asm, system_pickle


def scan_json(*paths, extra=()):
    p = run_cli("scan", "--format", "json", *extra, *paths)
    assert p.returncode != 2, p.stderr
    return json.loads(p.stdout)["files"]


def imports(f):
    return [(e["module"], e["name"]) for s in f["streams"] for e in s["ir"] if e["kind"] == "import"]


def test_help_and_usage_errors(tmp_path):
    for cmd in ("scan", "explain"):
        p = run_cli(cmd, "--help")
        assert p.returncode == 0 and "usage: safepickle " + cmd in p.stdout
        assert run_cli(cmd).returncode == 2
        assert run_cli(cmd, "--bogus", "x").returncode == 2
    assert run_cli("scan", "--format", "yaml", "x").returncode == 2
    assert run_cli("scan", "--limit", "max_nothing=1", "x").returncode == 2


def test_io_error_exit_2(tmp_path):
    p = run_cli("scan", "--format", "json", tmp_path / "missing.pkl")
    assert p.returncode == 2
    f = json.loads(p.stdout)["files"][0]
    assert f["io_error"]["code"] == "io"
    assert run_cli("explain", tmp_path / "missing.pkl").returncode == 2


def test_json_shape_and_ir(tmp_path, marker):
    path = tmp_path / "m.bin"
    data = system_pickle(marker, proto=2)
    path.write_bytes(data)
    f = scan_json(path)[0]
    for k in ("path", "format", "pickle_bearing", "bytes_read", "streams", "notes"):
        assert k in f
    assert f["format"] == "pickle" and f["pickle_bearing"] is True
    s = f["streams"][0]
    for k in ("index", "loc", "start", "end", "proto", "depth", "parent", "ops", "complete", "error", "ir"):
        assert k in s
    assert s["complete"] is True and s["error"] is None and s["proto"] == 2 and s["end"] == len(data)
    imp = [e for e in s["ir"] if e["kind"] == "import"][0]
    assert (imp["module"], imp["name"], imp["op"]) == ("os", "system", "GLOBAL")
    assert data[imp["off"]:imp["off"] + 1] == b"c"
    call = [e for e in s["ir"] if e["kind"] == "call"][0]
    assert call["op"] == "REDUCE" and data[call["off"]:call["off"] + 1] == b"R"
    assert call["callee"] == {"type": "global", "module": "os", "name": "system"}
    assert call["args"]["items"][0]["value"] == "touch '%s'" % marker
    assert call["text"] == "os.system(%r)" % ("touch '%s'" % marker)
    assert not marker.exists()


def test_numpy_array_payloads_are_opaque(tmp_path):
    """Arrays pickled by numpy itself: each payload is kept and shown as a short
    opaque prefix, the bytes skipped are not read, and the file is safe."""
    path = tmp_path / "arrays.pkl"
    p = run_py("import numpy as np, pickle, sys\n"
               "d = {'w%d' % i: np.random.default_rng(i).standard_normal(65536) for i in range(16)}\n"
               "open(sys.argv[1], 'wb').write(pickle.dumps(d, protocol=4))", preload=False, args=(str(path),))
    assert p.returncode == 0, p.stderr
    f = scan_json(path)[0]
    assert f["verdict"] == "safe" and f["streams"][0]["complete"]
    payloads = [e["state"]["items"][4] for e in f["streams"][0]["ir"] if e["kind"] == "build" and
                e["state"].get("type") == "tuple" and e["state"]["count"] == 5]
    assert len(payloads) == 16
    opaque = [b for b in payloads if b.get("opaque")]
    # a payload whose first bytes happen to read as a pickle head is kept whole
    assert len(opaque) >= 12, payloads
    for b in opaque:
        assert b["type"] == "bytes" and b["len"] == 65536 * 8 and b["truncated"]
        assert len(b["value"].encode().decode("unicode_escape").encode("latin1")) == 64
    assert f["bytes_read"] < path.stat().st_size / 4


def test_stacked_and_broken_streams(tmp_path):
    path = tmp_path / "s.pkl"
    first = pickle.dumps({"a": 1}, protocol=2)
    second = Asm(4).call("builtins", "exec", "x=1").b + b"\xff\xfegarbage"
    path.write_bytes(first + bytes(second))
    f = scan_json(path)[0]
    assert len(f["streams"]) == 2
    s0, s1 = f["streams"]
    assert s0["complete"] and s1["start"] == len(first)
    assert not s1["complete"] and s1["error"]["code"] == "bad_opcode"
    assert s1["error"]["off"] == len(second) - 9
    assert ("builtins", "exec") in imports(f)


def test_compat_and_dotted_names(tmp_path):
    p2 = tmp_path / "p2.pkl"
    p2.write_bytes(Asm(2).call("__builtin__", "eval", "1").stop())
    p4 = tmp_path / "p4.pkl"
    p4.write_bytes(Asm(4).call("torch", "serialization.os.system", "id").stop())
    a, b = scan_json(p2, p4)
    imp = [e for e in a["streams"][0]["ir"] if e["kind"] == "import"][0]
    assert (imp["module"], imp["name"], imp["raw_module"]) == ("builtins", "eval", "__builtin__")
    assert ("torch", "serialization.os.system") in imports(b)


def test_limit_is_reported(tmp_path):
    path = tmp_path / "l.pkl"
    path.write_bytes(pickle.dumps(list(range(1000)), protocol=2))
    f = scan_json(path, extra=("--limit", "max_ops=50"))[0]
    err = f["streams"][0]["error"]
    assert err["code"] == "limit" and err["limit"] == "max_ops"


def test_explain_listing(tmp_path, marker):
    path = tmp_path / "e.pkl"
    a = Asm(2)
    a.global_("builtins", "getattr").mark().global_("os", "path").str_("system").tuple_().reduce()
    a.mark().str_("touch '%s'" % marker).tuple_().reduce().pop().none()
    path.write_bytes(a.stop())
    p = run_cli("explain", path)
    assert p.returncode == 0, p.stderr
    out = p.stdout
    assert "from builtins import getattr" in out
    assert "_v2 = builtins.getattr(os.path, 'system')" in out
    assert "_v3 = _v2(\"touch '%s'\")" % marker in out
    assert "del _v3" in out
    assert "# STOP" in out
    assert not marker.exists()


def test_text_format(tmp_path, marker):
    path = tmp_path / "t.pkl"
    path.write_bytes(system_pickle(marker, proto=0))
    p = run_cli("scan", "-v", path)
    assert p.returncode != 2
    assert "import   GLOBAL           os.system" in p.stdout
    assert "call     REDUCE" in p.stdout
