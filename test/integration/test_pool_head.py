"""test_pool_head.py - the reader of a multiprocessing.Pool message's head
(preload/pya_pool.c, pya_pool_head), against the real picklers: layer 2
answers a refused Pool task with a task of the same job and index read from
the refused bytes, so a wrong job or index would hand the refusal to another
caller's get(). Every message multiprocessing itself writes (ForkingPickler,
and the pure-Python pickler as a second writer), task 5-tuples and result
3-tuples, protocols 2-5, job and index across every int width the pickler
picks (BININT1, BININT2, BININT, LONG1 past 32 bits, negative), index None,
arguments large enough to span several frames: the reader gives exactly what
pickle.loads gives, or declines (ints past 32 bits); it never gives another
number. The reader is compiled into a small driver (it has no Python in it);
test/fuzz/fuzz_poolhead.c fuzzes the same file."""
import io
import itertools
import os
import pickle
import struct
import subprocess

import pytest

from conftest import REPO

DRIVER = r"""
#include "pya_pool.c"
#include <stdio.h>
#include <stdlib.h>
/* stdin: messages, each a 4-byte little-endian length then the bytes;
 * stdout: a line per message, "job idx" (idx "None") or "no" */
int main(void) {
    unsigned char h[4];
    while (fread(h, 1, 4, stdin) == 4) {
        size_t n = (size_t)h[0] | (size_t)h[1] << 8 | (size_t)h[2] << 16 | (size_t)h[3] << 24;
        unsigned char *p = malloc(n ? n : 1);
        if (!p || fread(p, 1, n, stdin) != n) return 2;
        long long job, idx;
        bool none;
        if (pya_pool_head(p, n, &job, &idx, &none)) {
            if (none) printf("%lld None\n", job);
            else printf("%lld %lld\n", job, idx);
        } else {
            printf("no\n");
        }
        free(p);
    }
    return 0;
}
"""

INTS = (0, 1, 255, 256, 65535, 65536, 2**31 - 1, 2**31, 2**40, -1, -256, -2**31, -2**31 - 1)


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    d = tmp_path_factory.mktemp("poolhead")
    (d / "drv.c").write_text(DRIVER)
    exe = d / "drv"
    subprocess.run(["cc", "-std=gnu11", "-Wall", "-Wextra", "-Werror", "-O1", "-D_GNU_SOURCE",
                    "-I" + os.path.join(REPO, "preload"), "-I" + os.path.join(REPO, "analyzer"),
                    "-o", str(exe), str(d / "drv.c")], check=True)
    return str(exe)


def _messages():
    from multiprocessing.reduction import ForkingPickler

    def pure(obj, proto):
        b = io.BytesIO()
        pickle._Pickler(b, proto).dump(obj)
        return b.getvalue()

    writers = (("ForkingPickler", lambda o, p: bytes(ForkingPickler.dumps(o, p))), ("pickle._Pickler", pure))
    big = "x" * 150_000                        # a task whose arguments span several frames
    for (wname, dumps), proto, job, idx, kind in itertools.product(
            writers, (2, 3, 4, 5), INTS, INTS + (None,), ("task", "bigtask", "result")):
        if kind == "bigtask" and (job not in (0, 65536, -1) or idx not in (None, 256)):
            continue
        if kind == "result":
            obj = (job, idx, (True, [1, 2]))
        else:
            obj = (job, idx, len, (big if kind == "bigtask" else "abc",), {})
        yield "%s p%d %s job=%r idx=%r" % (wname, proto, kind, job, idx), obj, dumps(obj, proto)


def test_pool_head_matches_the_pickler(driver):
    msgs = list(_messages())
    stdin = b"".join(struct.pack("<I", len(m)) + m for _, _, m in msgs)
    out = subprocess.run([driver], input=stdin, capture_output=True, check=True).stdout.decode().splitlines()
    assert len(out) == len(msgs)
    read = declined = 0
    bad = []
    for (name, obj, m), line in zip(msgs, out):
        job, idx = pickle.loads(m)[:2]
        fits = lambda v: -2**31 <= v < 2**31
        want = "%d %s" % (job, "None" if idx is None else idx) if fits(job) and (idx is None or fits(idx)) else "no"
        if line != want:
            bad.append((name, line, want))
        read += line != "no"
        declined += line == "no"
    assert not bad, bad[:10]
    assert read > 0 and declined > 0          # both outcomes were exercised
