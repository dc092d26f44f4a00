"""test_package_importer.py - torch.package: a loader that imports the pickle's globals from the archive's own source.

torch.package.PackageImporter(path).load_pickle(pkg, res) unpickles a member of
the archive with PackageUnpickler, whose find_class imports each global's
module through the importer: a module the archive does not list in
`.data/extern_modules` is built from the archive's own `<module>.py` member
(`exec` of its source). So one file the attacker controls - the kind of file
the threat model covers: bytes a process will unpickle - carries both a pickle
that only constructs an object (`NEWOBJ` of `evilmod.Foo`: no call, judged
`safe` by layer 1 and by layer 2's bytes judgement) and the module whose body
runs at that import. A `safe` verdict lifts layer 2's code, file-write and
import vetoes for the load's scope ("A veto that does not misfire": what runs
is taken to be an installed library's own code), so the archive's module body
runs with both layers on: here it creates the marker with `open(..., "w")`;
a file write is enough to plant code for later (a `.pth` in site-packages).

This is the "Python source" exclusion of README.md's threat model, reached
through a pickle loader from the pickle-bearing file itself, not through a
file planted beside it. Fixed in layer 2: the `safe` relaxation holds only for
a load that resolved a global through pickle's own find_class (it raises the
`pickle.find_class` audit event; PackageUnpickler.find_class never does), so
the archive module's `compile`/`exec` meets the code veto and the load is
refused. Cost to benign loads: a torch.package archive whose pickles name a
module interned in it (torch.package's purpose) is refused as well; one whose
pickles name only extern modules (torch, the stdlib) loads as before.
"""
import os
import subprocess

import pytest

from conftest import LIB, PYTHON, clean_env

pytestmark = pytest.mark.skipif(not os.path.exists(LIB), reason="libsafepickle.so not built")

BUILD = r"""
import os, sys
from torch.package import PackageExporter
d, marker = sys.argv[1], sys.argv[2]
src = os.path.join(d, "src"); os.makedirs(src, exist_ok=True)
with open(os.path.join(src, "evilmod.py"), "w") as f:
    f.write("class Foo:\n    pass\n")
sys.path.insert(0, src)
import evilmod
with PackageExporter(os.path.join(d, "model.pt")) as e:
    # the archive's copy of the module: its body runs when the pickle's global is resolved
    e.save_source_string("evilmod", "open(%r, 'w').close()\nclass Foo:\n    pass\n" % marker)
    e.save_pickle("model", "model.pkl", evilmod.Foo())
"""

LOAD = r"""
import sys
from torch.package import PackageImporter
try:
    print("loaded", PackageImporter(sys.argv[1]).load_pickle("model", "model.pkl"))
except Exception as e:
    print("error", type(e).__name__)
"""


def _load(path, preload):
    e = clean_env(LD_PRELOAD=LIB) if preload else clean_env()
    return subprocess.run([PYTHON, "-c", LOAD, str(path)], env=e, capture_output=True, text=True, timeout=300)


def test_archive_module_source_does_not_run(tmp_path):
    marker = tmp_path / "ran"
    subprocess.run([PYTHON, "-c", BUILD, str(tmp_path), str(marker)], env=clean_env(), check=True, timeout=300)
    assert not marker.exists()
    r = _load(tmp_path / "model.pt", False)
    assert marker.exists() and "loaded" in r.stdout, (r.stdout, r.stderr[-2000:])   # the shape runs its code
    os.unlink(marker)
    r = _load(tmp_path / "model.pt", True)
    assert not marker.exists(), ("the archive's module ran under the preload", r.stdout, r.stderr[-2000:])
    assert "error" in r.stdout and "safepickle: blocked" in r.stderr and "runtime.code" in r.stderr, \
        (r.stdout, r.stderr[-2000:])


EXTERN_ONLY = r"""
import sys, torch
from torch.package import PackageExporter, PackageImporter
p = sys.argv[1]
with PackageExporter(p) as e:
    e.extern("torch.**")
    e.save_pickle("model", "model.pkl", {"w": torch.arange(4.0), "names": ["a", "b"], "n": 3})
print(PackageImporter(p).load_pickle("model", "model.pkl"))
"""


def test_extern_only_package_loads_the_same(tmp_path):
    e = clean_env()
    plain = subprocess.run([PYTHON, "-c", EXTERN_ONLY, str(tmp_path / "a.pt")], env=e, capture_output=True,
                           text=True, timeout=300)
    pre = subprocess.run([PYTHON, "-c", EXTERN_ONLY, str(tmp_path / "b.pt")], env=clean_env(LD_PRELOAD=LIB),
                         capture_output=True, text=True, timeout=300)
    assert plain.returncode == 0 and "tensor" in plain.stdout, plain.stderr[-2000:]
    assert pre.returncode == 0 and pre.stdout == plain.stdout, (pre.stdout, pre.stderr[-2000:])
    assert "safepickle:" not in pre.stderr, pre.stderr[-2000:]
