/* audit.c - how a decision is told: the one-line `safepickle:` message on stderr
 * (stack buffer + write(2), no stdio) and the JSON-lines audit record (cJSON),
 * with the native call site of the load taken with libunwind and symbolised.
 * libunwind is loaded with dlopen(RTLD_LOCAL) on first use: linking it would put
 * its _Unwind_* symbols in the global scope and take over C++ exception
 * unwinding in every preloaded process (libtorch throws). */
#include "spp.h"
#include "jsonout.h"

#define UNW_LOCAL_ONLY
#include <libunwind.h>

#include <cjson/cJSON.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define SPP_STR2(x) #x
#define SPP_STR(x) SPP_STR2(x)
#define SPP_SYM_MAX 256 /* longest symbol name recorded */

static char spp_dest[SPP_PATH_MAX];
static bool spp_dest_set;

const char *spp_audit_dest(void) { return spp_dest_set ? spp_dest : NULL; }

void spp_audit_init(void) {
    const char *d = getenv("SAFEPICKLE_LOG");
    const spa_policy *p = spp_policy();
    if (!d && p) d = p->audit_log;
    if (!d || !*d || !strcmp(d, "none") || !strcmp(d, "off")) return;
    if (d[0] != '/' && strcmp(d, "stderr") && strcmp(d, "stdout")) {
        /* relative: fix it now, the program may chdir later */
        char cwd[SPP_PATH_MAX];
        int k = -1;
        if (getcwd(cwd, sizeof cwd)) k = snprintf(spp_dest, sizeof spp_dest, "%s/%s", cwd, d);
        if (k < 0 || (size_t)k >= sizeof spp_dest) snprintf(spp_dest, sizeof spp_dest, "%s", d);
    } else {
        snprintf(spp_dest, sizeof spp_dest, "%s", d);
    }
    spp_dest_set = true;
}

const spa_reason *spp_decisive(const spa_reason *r, size_t n) {
    const spa_reason *best = NULL;
    for (size_t i = 0; i < n; i++)
        if (!best || r[i].severity > best->severity) best = &r[i];
    return best;
}

/* ------------------------------------------------------------------ stderr line */
void spp_block_line(const spp_event *ev) {
    char line[SPP_LINE_MAX];
    const spa_policy *p = spp_policy();
    const char *what = ev->action == SPA_ACT_BLOCK ? "blocked"
                     : ev->action == SPA_ACT_WARN ? "warning (not blocked)" : "allowed";
    const spa_reason *d = spp_decisive(ev->reasons, ev->n_reasons);
    char why[1024];
    if (d)
        snprintf(why, sizeof why, "%s [rule %s, %s@%llu]", d->msg ? d->msg : "?", d->rule ? d->rule : "?",
                 d->loc ? d->loc : "?", (unsigned long long)d->off);
    else
        snprintf(why, sizeof why, "%s", ev->detail ? ev->detail : "no reason given");
    int n = snprintf(line, sizeof line, "safepickle: %s %s: %s: %s (%s; policy %s)\n", what,
                     ev->path ? ev->path : "?", spa_verdict_name(ev->verdict), why,
                     ev->call ? ev->call : "?", p && p->name ? p->name : "<none>");
    if (n < 0) return;
    if ((size_t)n >= sizeof line) { n = (int)sizeof line - 1; line[n - 1] = '\n'; }
    spp_write_stderr(line, (size_t)n);
}

/* ------------------------------------------------------------------ call site */
typedef int (*spp_uw_getcontext_t)(unw_context_t *);
typedef int (*spp_uw_init_local_t)(unw_cursor_t *, unw_context_t *);
typedef int (*spp_uw_step_t)(unw_cursor_t *);
typedef int (*spp_uw_get_reg_t)(unw_cursor_t *, unw_regnum_t, unw_word_t *);
typedef int (*spp_uw_get_proc_name_t)(unw_cursor_t *, char *, size_t, unw_word_t *);

static struct {
    pthread_once_t once;
    spp_uw_getcontext_t getcontext;
    spp_uw_init_local_t init_local;
    spp_uw_step_t step;
    spp_uw_get_reg_t get_reg;
    spp_uw_get_proc_name_t get_proc_name;
} spp_uw = { .once = PTHREAD_ONCE_INIT };

static void spp_uw_load(void) {
    void *h = dlopen("libunwind.so.8", RTLD_LAZY | RTLD_LOCAL);
    if (!h) return;
    spp_uw.getcontext = (spp_uw_getcontext_t)dlsym(h, SPP_STR(unw_tdep_getcontext));
    spp_uw.init_local = (spp_uw_init_local_t)dlsym(h, SPP_STR(unw_init_local));
    spp_uw.step = (spp_uw_step_t)dlsym(h, SPP_STR(unw_step));
    spp_uw.get_reg = (spp_uw_get_reg_t)dlsym(h, SPP_STR(unw_get_reg));
    spp_uw.get_proc_name = (spp_uw_get_proc_name_t)dlsym(h, SPP_STR(unw_get_proc_name));
}

static cJSON *spp_frame(unw_word_t ip, const char *sym, unw_word_t off) {
    cJSON *f = cJSON_CreateObject();
    char hex[32];
    snprintf(hex, sizeof hex, "0x%llx", (unsigned long long)ip);
    cJSON_AddStringToObject(f, "ip", hex);
    if (sym && *sym) {
        cJSON_AddStringToObject(f, "sym", sym);
        cJSON_AddNumberToObject(f, "off", (double)off);
    }
    Dl_info di;
    if (dladdr((void *)ip, &di) && di.dli_fname) {
        cJSON_AddStringToObject(f, "obj", di.dli_fname);
        char rel[32];
        snprintf(rel, sizeof rel, "0x%llx", (unsigned long long)(ip - (unw_word_t)di.dli_fbase));
        cJSON_AddStringToObject(f, "obj_off", rel);
    }
    return f;
}

/* The native frames above the preload: [0] is the call site of the hooked call. */
static void spp_add_stack(cJSON *rec) {
    pthread_once(&spp_uw.once, spp_uw_load);
    if (!spp_uw.getcontext || !spp_uw.init_local || !spp_uw.step || !spp_uw.get_reg) return;
    unw_context_t uc;
    unw_cursor_t cur;
    if (spp_uw.getcontext(&uc) != 0 || spp_uw.init_local(&cur, &uc) != 0) return;
    cJSON *stack = cJSON_CreateArray();
    int kept = 0;
    for (int guard = 0; guard < 64 && kept < SPP_STACK_FRAMES && spp_uw.step(&cur) > 0; guard++) {
        unw_word_t ip = 0, off = 0;
        if (spp_uw.get_reg(&cur, UNW_REG_IP, &ip) != 0 || ip == 0) break;
        if (spp_addr_is_self((void *)ip)) continue; /* our own frames */
        char sym[SPP_SYM_MAX];
        sym[0] = '\0';
        if (spp_uw.get_proc_name && spp_uw.get_proc_name(&cur, sym, sizeof sym, &off) != 0 && !sym[0]) off = 0;
        /* ip is a return address (just after the call instruction) */
        cJSON_AddItemToArray(stack, spp_frame(ip, sym, off));
        kept++;
    }
    if (cJSON_GetArraySize(stack) > 0)
        cJSON_AddItemReferenceToObject(rec, "callsite", cJSON_GetArrayItem(stack, 0));
    cJSON_AddItemToObject(rec, "stack", stack);
}

/* ------------------------------------------------------------------ record */
static void spp_add_time(cJSON *rec) {
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    char buf[128];
    snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000000L);
    cJSON_AddStringToObject(rec, "time", buf);
}

static void spp_add_argv(cJSON *rec) {
    size_t n = 0;
    const char *a = spp_argv(&n);
    cJSON *arr = cJSON_CreateArray();
    for (size_t i = 0; i < n;) {
        size_t l = strnlen(a + i, n - i);
        char *s = strndup(a + i, l);
        if (s) { cJSON_AddItemToArray(arr, cJSON_CreateString(s)); free(s); }
        i += l + 1;
    }
    cJSON_AddItemToObject(rec, "argv", arr);
}

static void spp_write_all(int fd, const char *s, size_t n) {
    while (n > 0) {
        ssize_t w = write(fd, s, n);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) return;
        s += w;
        n -= (size_t)w;
    }
}

void spp_audit_write(const spp_event *ev) {
    const char *dest = spp_audit_dest();
    if (!dest) return;
    int saved = errno;
    spp_depth++;
    const spa_policy *p = spp_policy();
    cJSON *rec = cJSON_CreateObject();
    if (!rec) goto out;
    spp_add_time(rec);
    cJSON_AddNumberToObject(rec, "pid", (double)getpid());
    cJSON_AddStringToObject(rec, "exe", spp_exe());
    spp_add_argv(rec);
    cJSON_AddStringToObject(rec, "layer", ev->layer ? ev->layer : "file");
    cJSON_AddStringToObject(rec, "call", ev->call ? ev->call : "?");
    cJSON_AddStringToObject(rec, "path", ev->path ? ev->path : "?");
    if (ev->fd >= 0) cJSON_AddNumberToObject(rec, "fd", ev->fd);
    if (ev->format) cJSON_AddStringToObject(rec, "format", ev->format);
    cJSON_AddStringToObject(rec, "verdict", spa_verdict_name(ev->verdict));
    cJSON_AddStringToObject(rec, "action", spa_action_name(ev->action));
    cJSON_AddBoolToObject(rec, "cached", ev->cached);
    if (ev->trusted) cJSON_AddBoolToObject(rec, "trusted", true);
    cJSON *rs = cJSON_CreateArray();
    for (size_t i = 0; i < ev->n_reasons; i++) {
        cJSON *o = spa_reason_json(&ev->reasons[i]);
        if (o) cJSON_AddItemToArray(rs, o);
    }
    cJSON_AddItemToObject(rec, "reasons", rs);
    if (ev->detail) cJSON_AddStringToObject(rec, "detail", ev->detail);
    cJSON *pol = cJSON_CreateObject();
    cJSON_AddStringToObject(pol, "name", p && p->name ? p->name : "<none>");
    cJSON_AddStringToObject(pol, "source", p && p->source ? p->source : "<none>");
    cJSON_AddStringToObject(pol, "mode", p ? spa_mode_name(p->mode) : "enforce");
    cJSON_AddItemToObject(rec, "policy", pol);
    spp_add_stack(rec);
    char *txt = spa_json_print(rec, false, true); /* strict UTF-8, raw bytes kept as <key>_hex */
    cJSON_Delete(rec);
    if (!txt) goto out;
    size_t n = strlen(txt);
    int fd;
    if (!strcmp(dest, "stderr")) fd = 2;
    else if (!strcmp(dest, "stdout")) fd = 1;
    else fd = real_open ? real_open(dest, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600) : -1;
    if (fd >= 0) {
        /* one write per record (O_APPEND keeps concurrent writers' lines whole) */
        char *line = malloc(n + 1);
        if (line) {
            memcpy(line, txt, n);
            line[n] = '\n';
            spp_write_all(fd, line, n + 1);
            free(line);
        }
        if (fd > 2 && real_close) real_close(fd);
    }
    cJSON_free(txt);
out:
    spp_depth--;
    errno = saved;
}

void spp_report(const spp_event *ev) {
    if (ev->action != SPA_ACT_ALLOW) spp_block_line(ev);
    spp_audit_write(ev);
}
