"""test_kb_tables.py - the knowledge base's generated tables match this machine's interpreter
and packages (test/kbgen.py --check, run with the built CLI).

--check fails when a stdlib module has no module key, when analyzer/kb/modattr.tsv lacks a
module-valued attribute, or when analyzer/kb/reexport.tsv lacks a callable re-exported
under a data module key whose definition the CLI judges other than data. It had been
failing on main unnoticed (its parser stopped at the first @partial line of stdlib.tsv)
because nothing ran it; a table behind the installed packages is a hole (a re-export
judged data while its definition writes files)."""
import os
import subprocess

from conftest import BUILD, CLI, PYTHON, clean_env

KBGEN = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "kbgen.py")


def test_kbgen_check_passes_with_the_built_cli():
    assert os.path.exists(CLI), "no built CLI at %s" % CLI
    r = subprocess.run([PYTHON, KBGEN, "--check"], env=clean_env(SAFEPICKLE_BUILD=BUILD), capture_output=True,
                       text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    # each table was compared, none skipped
    assert "reexport.tsv: all" in r.stdout and "stdlib modules covered" in r.stdout, r.stdout[-3000:]


def test_kbgen_check_without_a_cli_fails_loudly(tmp_path):
    r = subprocess.run([PYTHON, KBGEN, "--check"], env=clean_env(SAFEPICKLE_BUILD=str(tmp_path)),
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 2 and "cannot check reexport.tsv" in r.stdout, (r.returncode, r.stdout[-2000:])
