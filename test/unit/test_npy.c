/* test_npy.c - .npy versions 1, 2 and 3: an object dtype (alone or inside a
 * structured dtype) means the pickle after the header is scanned as
 * "<name>!pickle"; numeric data is never read; broken headers give notes. */
#include <stdlib.h>
#include <string.h>

#include "containers.h"
#include "t.h"

static const char PAYLOAD[] = "cos\nsystem\n(S'echo x'\ntR.";

/* build an npy file: magic, version, header (padded with spaces + \n), data */
static size_t npy(uint8_t *out, int major, const char *dict, const void *data, size_t dn) {
    size_t pre = major == 1 ? 10 : 12;
    size_t hl = strlen(dict) + 1;
    size_t total = pre + hl;
    size_t pad = (64 - total % 64) % 64;
    hl += pad;
    memcpy(out, "\x93NUMPY", 6);
    out[6] = (uint8_t)major;
    out[7] = 0;
    if (major == 1) { out[8] = (uint8_t)hl; out[9] = (uint8_t)(hl >> 8); }
    else { out[8] = (uint8_t)hl; out[9] = (uint8_t)(hl >> 8); out[10] = (uint8_t)(hl >> 16); out[11] = (uint8_t)(hl >> 24); }
    memcpy(out + pre, dict, strlen(dict));
    memset(out + pre + strlen(dict), ' ', pad);
    out[pre + hl - 1] = '\n';
    memcpy(out + pre + hl, data, dn);
    return pre + hl + dn;
}

static spa_result *scan_buf(const uint8_t *p, size_t n) {
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    o.name = "a.npy";
    spa_result *r = NULL;
    spa_err e;
    if (spa_scan_mem(&o, p, n, &r, &e) != SPA_OK) return NULL;
    return r;
}

static bool payload_at(const spa_result *r, const char *loc) {
    for (size_t i = 0; r && i < r->n_streams; i++) {
        if (strcmp(r->streams[i].loc, loc)) continue;
        for (size_t k = 0; k < r->streams[i].n_ir; k++)
            if (r->streams[i].ir[k].kind == SPA_IR_IMPORT && !strcmp(r->streams[i].ir[k].name, "system")) return true;
    }
    return false;
}

static void test_versions_and_dtypes(void) {
    static uint8_t b[4096];
    static const char *obj[] = {
        "{'descr': '|O', 'fortran_order': False, 'shape': (2,), }",
        "{'descr': '<O8', 'fortran_order': False, 'shape': (2,), }",
        "{'descr': [('a', '<f8'), ('b', '|O')], 'fortran_order': False, 'shape': (2,), }",
        "{\"descr\": \"|O\", \"fortran_order\": False, \"shape\": (1,)}",
    };
    for (int v = 1; v <= 3; v++) {
        for (size_t i = 0; i < sizeof obj / sizeof obj[0]; i++) {
            size_t n = npy(b, v, obj[i], PAYLOAD, sizeof PAYLOAD - 1);
            spa_result *r = scan_buf(b, n);
            T_CHECK_MSG(r && r->format == SPA_FMT_NPY && payload_at(r, "a.npy!pickle"), "v%d dtype %zu", v, i);
            spa_result_free(r);
        }
    }
}

static void test_numeric_is_not_read(void) {
    static uint8_t b[1 << 20];
    /* numeric data that happens to hold a pickle is never unpickled by numpy */
    size_t n = npy(b, 1, "{'descr': '<f8', 'fortran_order': False, 'shape': (100000,), }", PAYLOAD, sizeof PAYLOAD - 1);
    memset(b + n, 0, sizeof b - n);
    spa_result *r = scan_buf(b, sizeof b);
    T_CHECK(r && !r->pickle_bearing && r->n_streams == 0 && r->n_notes == 0);
    spa_result_free(r);
    /* field named O is not an object dtype... but is scanned conservatively only if data could be a pickle */
    n = npy(b, 1, "{'descr': [('O', '<f8')], 'fortran_order': False, 'shape': (1,), }", "\0\0\0\0\0\0\0\0", 8);
    r = scan_buf(b, n);
    T_CHECK(r != NULL);
    if (r) for (size_t i = 0; i < r->n_streams; i++) T_EQ_INT(r->streams[i].n_ir, 0);
    spa_result_free(r);
}

static void test_broken_headers(void) {
    static uint8_t b[256];
    size_t n = npy(b, 9, "{'descr': '|O'}", PAYLOAD, sizeof PAYLOAD - 1);
    b[6] = 9;
    spa_result *r = scan_buf(b, n);
    T_CHECK(r && r->n_notes == 1 && r->notes[0].kind == SPA_NOTE_ERROR);
    spa_result_free(r);
    n = npy(b, 2, "{'descr': '|O'}", "", 0);
    b[10] = 0x7f; /* header length ~ 8 MB */
    r = scan_buf(b, n);
    T_CHECK(r && r->n_notes == 1 && r->pickle_bearing);
    spa_result_free(r);
    for (size_t k = 0; k < 80; k++) { /* every truncation */
        n = npy(b, 1, "{'descr': '|O', 'shape': (1,)}", PAYLOAD, sizeof PAYLOAD - 1);
        uint8_t *t = malloc(k ? k : 1);
        memcpy(t, b, k);
        r = scan_buf(t, k);
        T_CHECK(r != NULL);
        spa_result_free(r);
        free(t);
    }
}

T_MAIN("npy", T_CASE(test_versions_and_dtypes), T_CASE(test_numeric_is_not_read), T_CASE(test_broken_headers))
