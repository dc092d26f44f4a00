/* fuzz_recog.c - libFuzzer harness for THE recogniser (spa_recognise / spc_recognise)
 * over arbitrary heads and tails. The first byte picks the source's shape: declared
 * size exact, larger than the bytes (short reads) or smaller; scratch none, small or
 * full; a pread that fails at some offset. Beyond memory safety it checks what the
 * preload relies on: the answer does not depend on the scratch, a failed read is
 * SPA_E_IO (never an answer), and "no pickle" (SPA_FMT_NONE) is never said of
 * content in which the full scan finds a pickle stream, nor of bytes from which
 * the VM (run as the unpickler from offset 0) reads to STOP, importing a module. */
#include <stdlib.h>
#include <string.h>

#include "containers.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

typedef struct fz_src {
    const uint8_t *p;
    size_t n;
    uint64_t fail_at; /* a read touching this offset fails (UINT64_MAX: none) */
    int failed;
} fz_src;

static ssize_t fz_pread(void *ctx, void *buf, size_t len, uint64_t off) {
    fz_src *f = ctx;
    if (f->fail_at != UINT64_MAX && off <= f->fail_at && f->fail_at < off + len) {
        f->failed = 1;
        return -1;
    }
    if (off >= f->n) return 0;
    size_t k = f->n - (size_t)off < len ? f->n - (size_t)off : len;
    memcpy(buf, f->p + off, k);
    return (ssize_t)k;
}

/* A module name CPython could import: dotted identifiers (ASCII here). The
 * VM records an import of any module line; the loader imports only these. */
static int importable(const char *m) {
    if (!m || !*m) return 0;
    int start = 1;
    for (; *m; m++) {
        char c = *m;
        if (c == '.') { if (start) return 0; start = 1; continue; }
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || (!start && c >= '0' && c <= '9')))
            return 0;
        start = 0;
    }
    return !start;
}

/* The stream at offset 0 read to STOP with an importable import and no
 * persistent id (the VM does not check that a protocol-0 pid is ASCII,
 * CPython does; and only a loader with persistent_load gets past one). */
/* The module name as the input spells it: some occurrence is not followed by
 * a NUL (the IR's C string ends at an embedded NUL, which CPython refuses). */
static int spelled(const uint8_t *p, size_t n, const char *m) {
    size_t l = strlen(m);
    for (const uint8_t *q = p; l && (q = memmem(q, n - (size_t)(q - p), m, l)); q++)
        if ((size_t)(q - p) + l >= n || q[l] != 0) return 1;
    return 0;
}

/* UTF-8 by its structure (lead byte and continuation bytes), as a decoder
 * that cannot accept less checks it. */
static int utf8_ok(const uint8_t *s, size_t n) {
    for (size_t i = 0; i < n; i++) {
        uint8_t c = s[i];
        if (c < 0x80) continue;
        size_t k = (c >= 0xc2 && c <= 0xdf) ? 1 : (c >= 0xe0 && c <= 0xef) ? 2 : (c >= 0xf0 && c <= 0xf4) ? 3 : 0;
        if (k == 0 || k > n - 1 - i) return 0;
        for (size_t j = 1; j <= k; j++)
            if ((s[i + j] & 0xc0) != 0x80) return 0;
        i += k;
    }
    return 1;
}

/* GLOBAL and INST ('c', 'i') read two lines after the opcode, decode both as
 * UTF-8 and only then call find_class: CPython certainly stops at one whose
 * lines do not decode. Past it the VM, a superset of CPython, reads on; what
 * it imports there is no evidence (fuzz finds: "TixookielibCC\0\xfe..." and
 * "]Tixookiel\xff..." as the module line, an importable module later). A
 * module line that is not an importable name as written (a line the IR's C
 * string cut at an embedded NUL is not one, wherever else its prefix occurs)
 * imports nothing, but a loader's own find_class may read on past it.
 * Returns 1 importable and written, 0 not, -1 the lines do not decode. */
static int line_import(const uint8_t *p, size_t n, uint64_t off, const char *raw) {
    if (off >= n) return 0;
    const uint8_t *a = p + off + 1, *end = p + n;
    const uint8_t *nl1 = a <= end ? memchr(a, '\n', (size_t)(end - a)) : NULL;
    if (!nl1) return 0;
    const uint8_t *nl2 = memchr(nl1 + 1, '\n', (size_t)(end - nl1 - 1));
    if (!utf8_ok(a, (size_t)(nl1 - a)) || (nl2 && !utf8_ok(nl1 + 1, (size_t)(nl2 - nl1 - 1)))) return -1;
    size_t l = raw ? strlen(raw) : 0;
    return raw && importable(raw) && (size_t)(nl1 - a) == l && !memcmp(a, raw, l);
}

static int vm_imports(const spa_stream *st, const uint8_t *p, size_t n) {
    if (st->depth != 0 || st->start != 0 || st->err.code != SPA_OK) return 0;
    int imp = 0;
    for (size_t k = 0; k < st->n_ir; k++) {
        const spa_ir *e = &st->ir[k];
        if (e->kind == SPA_IR_PERSID) return 0;
        if (e->kind != SPA_IR_IMPORT) continue;
        /* EXT1/2/4: the VM names copyreg's registry; CPython, whose registry is
         * empty unless a program fills it, stops there (unregistered code) */
        if (e->opcode == 0x82 || e->opcode == 0x83 || e->opcode == 0x84) return imp;
        if (e->opcode == 'c' || e->opcode == 'i') {
            const char *raw = e->result && e->result->kind == SPA_V_GLOBAL ? e->result->u.g.raw_module : NULL;
            int li = line_import(p, n, e->off, raw);
            if (li < 0) return imp; /* CPython stops here */
            if (li > 0 && importable(e->module)) imp = 1; /* else only a loader's own find_class reads on */
        } else if (importable(e->module) && spelled(p, n, e->module)) {
            imp = 1;
        }
    }
    return imp;
}

static spa_format recog(fz_src *f, uint64_t size, uint8_t *scratch, size_t cap, spa_code *rc) {
    spa_src s = {fz_pread, f, size, NULL};
    spa_format fmt = SPA_FMT_UNSCANNABLE;
    *rc = spa_recognise(&s, scratch, cap, &fmt);
    return fmt;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint8_t mode = data[0];
    fz_src f = {data + 1, size - 1, UINT64_MAX, 0};
    uint64_t declared = f.n;
    if ((mode & 3) == 1) declared = f.n + 1 + (mode >> 4) * 4096u; /* the file shrank */
    if ((mode & 3) == 2) declared = f.n / 2;                        /* the file grew */
    static uint8_t scratch[SPA_RECOG_SCRATCH];
    spa_code rc0, rc1, rc2;
    spa_format a = recog(&f, declared, NULL, 0, &rc0);
    spa_format b = recog(&f, declared, scratch, sizeof scratch, &rc1);
    spa_format c = recog(&f, declared, scratch, 64 + (mode >> 2) * 97u, &rc2);
    if (rc0 != SPA_OK || rc1 != SPA_OK || rc2 != SPA_OK) abort(); /* no read failed */
    if (a != b || a != c) abort();                                   /* scratch changes nothing */
    if ((int)a < 0 || (int)a >= SPA_FMT_COUNT) abort();

    /* a read that fails is an error, never an answer */
    if (f.n && (mode & 0x0c) == 0x0c) {
        fz_src g = f;
        g.fail_at = (uint64_t)(mode * 131u) % f.n;
        spa_code rc;
        spa_format x = recog(&g, declared, scratch, sizeof scratch, &rc);
        if (!g.failed && (rc != SPA_OK || x != a)) abort();
        if (g.failed && rc != SPA_E_IO) abort();
    }

    /* "not pickle-bearing" must hold against the full scan of the same bytes */
    if (a == SPA_FMT_NONE && declared == f.n) {
        spa_scan_opts o;
        spa_scan_opts_default(&o);
        o.name = "fuzz";
        o.limits.v[SPA_LIM_DECOMP_BYTES] = 4u << 20;
        o.limits.v[SPA_LIM_OPS] = 1u << 18;
        o.limits.v[SPA_LIM_MEMBERS] = 200;
        spa_src s = {fz_pread, &f, f.n, NULL};
        spa_result *r = NULL;
        if (spa_scan_src(&o, &s, &r, NULL) == SPA_OK) {
            if (r->n_streams > 0) abort();
            spa_result_free(r);
        }
        /* nor of bytes the VM, run as the unpickler, reads to STOP importing a
         * module (where the VM is a superset of CPython, a stream that breaks
         * off is no evidence: the sniff knows where CPython certainly fails) */
        r = NULL;
        if (spc_scan_as(&o, f.p, f.n, SPA_FMT_PICKLE, &r) == SPA_OK) {
            for (size_t i = 0; i < r->n_streams; i++)
                if (vm_imports(&r->streams[i], f.p, f.n)) abort();
            spa_result_free(r);
        }
    }
    return 0;
}
