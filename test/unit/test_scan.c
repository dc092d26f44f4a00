/* test_scan.c - the container entry points under allocation failure and
 * misuse: every allocation of a scan made to fail in turn (through the
 * pluggable allocator) over nested containers gives SPA_E_NOMEM or a result,
 * never a crash or a leak; bad arguments give SPA_E_USAGE; a path that is not
 * a regular file gives SPA_E_IO. */
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "containers.h"
#include "t.h"

typedef struct {
    long left;   /* allocations that still succeed; < 0: unlimited */
    long live;   /* blocks not yet freed */
} failing;

static void *fa_alloc(void *ctx, size_t n) {
    failing *f = ctx;
    if (f->left == 0) return NULL;
    if (f->left > 0) f->left--;
    void *p = malloc(n);
    if (p) f->live++;
    return p;
}

static void fa_free(void *ctx, void *p) {
    failing *f = ctx;
    if (p) f->live--;
    free(p);
}

/* A gzip of an npy object array whose pickle holds a nested pickle constant. */
static uint8_t *make_input(size_t *n) {
    static const char inner[] = "cos\nsystem\n(S'echo x'\ntR.";
    uint8_t pk[256];
    size_t k = 0;
    pk[k++] = 0x80; pk[k++] = 3; pk[k++] = 'B';
    uint32_t il = sizeof inner - 1;
    memcpy(pk + k, &il, 4); k += 4;
    memcpy(pk + k, inner, il); k += il;
    pk[k++] = '.';
    static const char hdr[] = "{'descr': '|O', 'fortran_order': False, 'shape': (1,), }";
    uint8_t npy[512];
    size_t hl = sizeof hdr - 1 + 1;
    memcpy(npy, "\x93NUMPY\x01\x00", 8);
    npy[8] = (uint8_t)hl; npy[9] = 0;
    memcpy(npy + 10, hdr, sizeof hdr - 1);
    npy[10 + hl - 1] = '\n';
    memcpy(npy + 10 + hl, pk, k);
    size_t nn = 10 + hl + k;
    uLongf cap = compressBound((uLong)nn) + 64;
    uint8_t *out = malloc(cap);
    z_stream z;
    memset(&z, 0, sizeof z);
    deflateInit2(&z, 6, Z_DEFLATED, 31, 8, Z_DEFAULT_STRATEGY);
    z.next_in = npy; z.avail_in = (uInt)nn; z.next_out = out; z.avail_out = (uInt)cap;
    deflate(&z, Z_FINISH);
    *n = cap - z.avail_out;
    deflateEnd(&z);
    return out;
}

static bool found_payload(const spa_result *r) {
    for (size_t i = 0; r && i < r->n_streams; i++)
        for (size_t k = 0; k < r->streams[i].n_ir; k++)
            if (r->streams[i].ir[k].kind == SPA_IR_IMPORT && !strcmp(r->streams[i].ir[k].name, "system") &&
                !strncmp(r->streams[i].loc, "x!gzip@0!pickle!const@", 22))
                return true;
    return false;
}

static void test_allocation_failures(void) {
    size_t n;
    uint8_t *in = make_input(&n);
    /* first, with no failures: the nested payload is found */
    failing f = {-1, 0};
    spa_alloc a = {fa_alloc, fa_free, &f};
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    o.alloc = &a;
    o.name = "x";
    spa_result *r = NULL;
    spa_err e;
    T_EQ_INT(spa_scan_mem(&o, in, n, &r, &e), SPA_OK);
    T_CHECK(found_payload(r));
    spa_result_free(r);
    T_EQ_INT(f.live, 0);
    /* then every allocation in turn fails */
    int nomem = 0, ok = 0;
    for (long fail = 0; fail < 400; fail++) {
        f.left = fail;
        f.live = 0;
        r = NULL;
        spa_code c = spa_scan_mem(&o, in, n, &r, &e);
        T_CHECK(c == SPA_OK || c == SPA_E_NOMEM);
        /* never a silent miss: a result is complete, or the scan says NOMEM */
        if (c == SPA_OK) { T_CHECK_MSG(found_payload(r), "allocation %ld failed: result without the payload", fail); ok++; }
        else { T_CHECK(r == NULL && e.msg); nomem++; }
        spa_result_free(r);
        T_CHECK_MSG(f.live == 0, "%ld blocks leaked when allocation %ld failed", f.live, fail);
    }
    T_CHECK(nomem > 0 && ok > 0);
    free(in);
}

static void test_misuse(void) {
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    spa_result *r = (spa_result *)1;
    spa_err e;
    T_EQ_INT(spa_scan_src(&o, NULL, &r, &e), SPA_E_USAGE);
    T_CHECK(r == NULL);
    T_EQ_INT(spa_scan_src(NULL, NULL, NULL, NULL), SPA_E_USAGE);
    T_EQ_INT(spa_scan_path(&o, "/", &r, &e), SPA_E_IO);
    T_EQ_INT(spa_scan_path(&o, "/nonexistent/x.pt", &r, &e), SPA_E_IO);
    T_EQ_INT(spa_scan_mem(&o, NULL, 0, &r, &e), SPA_OK);
    T_CHECK(r && !r->pickle_bearing && r->n_streams == 0);
    spa_result_free(r);
    spa_scan_opts_default(NULL);
    T_EQ_INT(spa_sniff(NULL, 10), SPA_FMT_NONE);
}

T_MAIN("scan", T_CASE(test_allocation_failures), T_CASE(test_misuse))
