/* vmjson.c - test helper for test_differential.py: runs the analyzer's VM
 * directly over each file as a raw pickle (stacked streams until EOF, no
 * container sniffing) and prints one JSON line per file with every import
 * (raw and resolved names), each stream's error and a digest of the whole
 * JSON report. With --fd the input is read through a bounded pread window
 * instead of zero-copy memory; with --general the VM runs without its fast
 * loop, with --nokinds without its kinds-only path (test_differential checks
 * all three give the same report). With --scan each file goes through the
 * whole scan (spa_scan_mem: containers, the nested-content hooks) and only
 * the digest of its report is printed (bytes_read left out: the paths read
 * different amounts). */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cjson/cJSON.h>

#include "internal.h"
#include "report.h"
#include "bytes.h"

static cJSON *ustr(const char *s) {
    char *u = spa_utf8_sanitize((const uint8_t *)s, strlen(s));
    cJSON *j = cJSON_CreateString(u ? u : "");
    free(u);
    return j;
}

static void scan_one(const char *path, const uint8_t *buf, size_t n, int vm_path) {
    spa_scan_opts o;
    spa_scan_opts_default(&o);
    o.name = path;
    o.vm_path = vm_path;
    spa_result *r = NULL;
    spa_err e;
    spa_scan_mem(&o, buf, n, &r, &e);
    if (r) r->bytes_read = 0;
    cJSON *rep = r ? spa_report_json(r) : NULL;
    char *rs = rep ? cJSON_PrintUnformatted(rep) : NULL;
    uint64_t h = 1469598103934665603ull;   /* FNV-1a of the report */
    for (const char *c = rs ? rs : ""; *c; c++) h = (h ^ (uint8_t)*c) * 1099511628211ull;
    cJSON *o2 = cJSON_CreateObject();
    cJSON_AddItemToObject(o2, "path", ustr(path));
    char hx[17];
    snprintf(hx, sizeof hx, "%016llx", (unsigned long long)h);
    cJSON_AddStringToObject(o2, "report", hx);
    char *s = cJSON_PrintUnformatted(o2);
    puts(s ? s : "{}");
    free(s);
    free(rs);
    cJSON_Delete(rep);
    cJSON_Delete(o2);
    spa_result_free(r);
}

static void run_one(const char *path, bool use_fd, int vm_path, bool scan) {
    int fd = open(path, O_RDONLY);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) { printf("{\"path\":\"%s\",\"io_error\":true}\n", path); if (fd >= 0) close(fd); return; }
    size_t n = (size_t)st.st_size;
    uint8_t *buf = malloc(n ? n : 1);
    size_t got = 0;
    while (got < n) { ssize_t r = read(fd, buf + got, n - got); if (r <= 0) break; got += (size_t)r; }
    n = got;
    if (scan) {
        scan_one(path, buf, n, vm_path);
        free(buf);
        close(fd);
        return;
    }
    spa_scan_opts o;
    memset(&o, 0, sizeof o);
    spa_limits_default(&o.limits);
    o.name = path;
    spa_scan_ctx *sc = spa_ctx_create(&o);
    spa_ctx_set_vm_general(sc, vm_path == SPA_VM_PATH_GENERAL);
    spa_ctx_set_vm_nokinds(sc, vm_path != 0);
    spa_src src;
    if (use_fd) spa_src_fd(&src, fd, n); else spa_src_mem(&src, buf, n);
    spa_in *in = spa_in_from_src(spa_ctx_arena(sc), &src, 0, n);
    while (!spa_in_eof(in)) {
        uint32_t idx;
        uint64_t before = spa_in_pos(in);
        if (spa_vm_run(sc, in, path, 0, UINT32_MAX, &idx) != SPA_OK) break;
        spa_stream *s = spa_ctx_stream(sc, idx);
        if (!s || !s->complete || spa_in_pos(in) == before) break;
    }
    spa_result *r = spa_ctx_finish(sc, SPA_FMT_PICKLE, n);
    cJSON *o2 = cJSON_CreateObject();
    cJSON_AddItemToObject(o2, "path", ustr(path));
    cJSON *imp = cJSON_AddArrayToObject(o2, "imports");
    cJSON *ss = cJSON_AddArrayToObject(o2, "streams");
    for (size_t j = 0; r && j < r->n_streams; j++) {
        const spa_stream *s = &r->streams[j];
        cJSON *so = cJSON_CreateObject();
        cJSON_AddBoolToObject(so, "complete", s->complete);
        cJSON_AddStringToObject(so, "err", spa_code_name(s->err.code));
        cJSON_AddNumberToObject(so, "off", (double)s->err.off);
        cJSON_AddNumberToObject(so, "end", (double)s->end);
        cJSON_AddNumberToObject(so, "n_ir", (double)s->n_ir);
        cJSON_AddItemToArray(ss, so);
        for (size_t i = 0; i < s->n_ir; i++) {
            const spa_ir *e = &s->ir[i];
            if (e->kind != SPA_IR_IMPORT || !e->result) continue;
            cJSON *t = cJSON_CreateArray();
            cJSON_AddItemToArray(t, ustr(e->result->u.g.raw_module));
            cJSON_AddItemToArray(t, ustr(e->result->u.g.raw_name));
            cJSON_AddItemToArray(t, ustr(e->module));
            cJSON_AddItemToArray(t, ustr(e->name));
            cJSON_AddItemToArray(imp, t);
        }
    }
    cJSON *rep = r ? spa_report_json(r) : NULL;
    char *rs = rep ? cJSON_PrintUnformatted(rep) : NULL;
    uint64_t h = 1469598103934665603ull;   /* FNV-1a of the report */
    for (const char *c = rs ? rs : ""; *c; c++) h = (h ^ (uint8_t)*c) * 1099511628211ull;
    char hx[17];
    snprintf(hx, sizeof hx, "%016llx", (unsigned long long)h);
    cJSON_AddStringToObject(o2, "report", hx);
    free(rs);
    cJSON_Delete(rep);
    char *s = cJSON_PrintUnformatted(o2);
    puts(s ? s : "{}");
    free(s);
    cJSON_Delete(o2);
    spa_result_free(r);
    free(buf);
    close(fd);
}

int main(int argc, char **argv) {
    bool use_fd = false, scan = false;
    int vm_path = 0, i = 1;
    for (; i < argc && argv[i][0] == '-' && strcmp(argv[i], "--list"); i++) {
        if (!strcmp(argv[i], "--fd")) use_fd = true;
        else if (!strcmp(argv[i], "--general")) vm_path = SPA_VM_PATH_GENERAL;
        else if (!strcmp(argv[i], "--nokinds")) vm_path = SPA_VM_PATH_FAST;
        else if (!strcmp(argv[i], "--scan")) scan = true;
    }
    if (i < argc && !strcmp(argv[i], "--list")) {
        /* paths one per line on stdin */
        char line[4096];
        while (fgets(line, sizeof line, stdin)) {
            line[strcspn(line, "\n")] = '\0';
            if (*line) run_one(line, use_fd, vm_path, scan);
        }
        return 0;
    }
    for (; i < argc; i++) run_one(argv[i], use_fd, vm_path, scan);
    return 0;
}
