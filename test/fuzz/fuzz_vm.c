/* fuzz_vm.c - libFuzzer harness for the pickle VM: runs every stream of the
 * input through the VM over a zero-copy memory reader or a bounded pread
 * window (chosen by the input's length parity), with default or tiny limits,
 * then renders the result as JSON, text and the explain listing. The same
 * input is run again through the VM's fast loop without its kinds-only path
 * and through its general path only (neither): the three JSON reports must
 * be equal, or the harness aborts. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"
#include "report.h"

typedef struct { const uint8_t *p; size_t n; } fz_src;

static ssize_t fz_pread(void *ctx, void *buf, size_t len, uint64_t off) {
    fz_src *s = ctx;
    if (off >= s->n) return 0;
    size_t k = s->n - (size_t)off;
    if (k > len) k = len;
    if (k > 4096) k = 4096;
    memcpy(buf, s->p + off, k);
    return (ssize_t)k;
}

/* Run the input; returns the JSON report (malloc'd) and renders the rest when
 * `render`. */
static char *fz_run(const uint8_t *data, size_t size, int vm_path, bool render) {
    spa_scan_opts o;
    memset(&o, 0, sizeof o);
    spa_limits_default(&o.limits);
    if (size && (data[0] & 1)) {
        o.limits.v[SPA_LIM_OPS] = 200;
        o.limits.v[SPA_LIM_STACK] = 50;
        o.limits.v[SPA_LIM_MARKS] = 20;
        o.limits.v[SPA_LIM_MEMO] = 30;
        o.limits.v[SPA_LIM_STR] = 16;
        o.limits.v[SPA_LIM_IR] = 40;
        o.limits.v[SPA_LIM_STREAMS] = 8;
    }
    spa_scan_ctx *sc = spa_ctx_create(&o);
    if (!sc) return NULL;
    spa_ctx_set_vm_general(sc, vm_path == SPA_VM_PATH_GENERAL);
    spa_ctx_set_vm_nokinds(sc, vm_path != 0);
    fz_src fs = { data, size };
    spa_src src;
    if (size % 2) spa_src_mem(&src, data, size);
    else src = (spa_src){ fz_pread, &fs, size, NULL };
    spa_in *in = spa_in_from_src(spa_ctx_arena(sc), &src, 0, size);
    for (int i = 0; in && i < 64 && !spa_in_eof(in); i++) {
        uint32_t idx;
        uint64_t before = spa_in_pos(in);
        if (spa_vm_run(sc, in, "fuzz", 0, UINT32_MAX, &idx) != SPA_OK) break;
        spa_stream *s = spa_ctx_stream(sc, idx);
        if (!s || !s->complete || spa_in_pos(in) == before) break;
    }
    spa_result *r = spa_ctx_finish(sc, SPA_FMT_PICKLE, size);
    if (!r) return NULL;
    cJSON *j = spa_report_json(r);
    char *txt = j ? cJSON_PrintUnformatted(j) : NULL;
    cJSON_Delete(j);
    FILE *null = render ? fopen("/dev/null", "w") : NULL;
    if (null) {
        spa_report_text(null, r);
        spa_explain(null, r);
        fclose(null);
    }
    spa_result_free(r);
    return txt;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    char *kinds = fz_run(data, size, 0, true);
    char *fast = fz_run(data, size, SPA_VM_PATH_FAST, false);
    char *general = fz_run(data, size, SPA_VM_PATH_GENERAL, false);
    if (fast && general && strcmp(fast, general) != 0) {
        fprintf(stderr, "fuzz_vm: the fast loop and the general path give different reports\n%s\n%s\n", fast,
                general);
        abort();
    }
    if (kinds && general && strcmp(kinds, general) != 0) {
        fprintf(stderr, "fuzz_vm: the kinds-only path and the general path give different reports\n%s\n%s\n",
                kinds, general);
        abort();
    }
    free(kinds);
    free(fast);
    free(general);
    return 0;
}
