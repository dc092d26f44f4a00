/* kb.c - the knowledge base: judges a global (module + possibly dotted name) by the
 * category tables in analyzer/kb/ (TSV files), split into a line table at build time
 * (kb_lines.awk, compiled in as kb_lines.inc). The tables are data; this file only knows how to match them (aliases, exact names, name patterns,
 * longest module prefix, dotted components, verbs). No state: every lookup walks the
 * read-only table (about 800 lines; the classifier caches per scan). */
#include <errno.h>
#include <fcntl.h>
#include <fnmatch.h>
#include <pthread.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kb.h"
#include "sha256.h"
#include "strfmt.h"

/* ------------------------------------------------------------------ names */
static const char *const kb_cat_names[SPA_KB_COUNT] = {
    [SPA_KB_UNKNOWN] = "unknown",           [SPA_KB_DATA] = "data",
    [SPA_KB_CODE_EXEC] = "code_exec",       [SPA_KB_PROCESS] = "process",
    [SPA_KB_NETWORK] = "network",           [SPA_KB_FILE_WRITE] = "file_write",
    [SPA_KB_IMPORT] = "import",             [SPA_KB_REFLECTION] = "reflection",
    [SPA_KB_DESERIALIZE] = "deserialize",   [SPA_KB_NATIVE] = "native",
    [SPA_KB_STATE_MUTATION] = "state_mutation", [SPA_KB_STDLIB_OTHER] = "stdlib_other",
};

const char *spa_kbcat_name(spa_kbcat c) {
    return (unsigned)c < SPA_KB_COUNT ? kb_cat_names[c] : "invalid";
}

static spa_kbcat kb_cat_parse(const char *s, size_t n) {
    for (int i = 0; i < SPA_KB_COUNT; i++)
        if (strlen(kb_cat_names[i]) == n && !memcmp(kb_cat_names[i], s, n)) return (spa_kbcat)i;
    return SPA_KB_UNKNOWN;
}

/* ------------------------------------------------------------------ line cursor */
#define KB_FIELDS 3
typedef struct kb_line {
    const char *f[KB_FIELDS];
    size_t fl[KB_FIELDS];
    int nf;
    bool stdlib; /* from stdlib.tsv */
} kb_line;

/* The TSV lines split once, at build time (kb_lines.awk): stdlib.tsv first. */
static const kb_line kb_lines[] = {
#define KBL(nf, std, a, b, c) { { a, b, c }, { sizeof a - 1, sizeof b - 1, sizeof c - 1 }, nf, std },
#define KBD(nf, std, a, b, c)
#include "kb_lines.inc"
#undef KBL
#undef KBD
};
/* The directive lines alone (`@...`), in the same order: what spa_kb_canon and the
 * directive lookups walk (the classifier asks them several times per call). */
static const kb_line kb_dlines[] = {
#define KBL(nf, std, a, b, c)
#define KBD(nf, std, a, b, c) { { a, b, c }, { sizeof a - 1, sizeof b - 1, sizeof c - 1 }, nf, std },
#include "kb_lines.inc"
#undef KBL
#undef KBD
};

enum { KBO_MODULE = 1, KBO_MODATTR, KBO_CAT, KBO_SHARED };
static bool kb_ovl_ready(void);
static const char *kb_ovl_get(uint8_t kind, const char *key, size_t n);

/* Module-valued attributes, "MODULE:ATTR" -> target, sorted (C locale) at build time. */
static const struct kb_modattr_ent { const char *key, *target; } kb_modattrs[] = {
#define KBM(k, t) { k, t },
#include "kb_modattr.inc"
#undef KBM
};

static int kb_modattr_cmp(const void *k, const void *e) {
    return strcmp((const char *)k, ((const struct kb_modattr_ent *)e)->key);
}

const char *spa_kb_modattr(const char *module, const char *attr) {
    char key[256];
    if (!module || !attr) return NULL;
    int n = spa_fmt(key, sizeof key, "%s:%s", module, attr);
    if (n < 0 || (size_t)n >= sizeof key) return NULL;
    const struct kb_modattr_ent *e = bsearch(key, kb_modattrs, sizeof kb_modattrs / sizeof *kb_modattrs,
                                             sizeof *kb_modattrs, kb_modattr_cmp);
    if (e) return e->target;
    return kb_ovl_ready() ? kb_ovl_get(KBO_MODATTR, key, (size_t)n) : NULL;
}

/* Re-exported callables, "MODULE:NAME" -> "DEFMODULE:QUALNAME", sorted (C locale) at build
 * time from analyzer/kb/reexport.tsv (test/kbgen.py): numpy.lib.save is numpy.save. */
static const struct kb_reexport_ent { const char *key, *target; } kb_reexports[] = {
#define KBR(k, t) { k, t },
#include "kb_reexport.inc"
#undef KBR
};

static const char *kb_reexport(const char *module, const char *name) {
    char key[256];
    int n = spa_fmt(key, sizeof key, "%s:%s", module, name);
    if (n < 0 || (size_t)n >= sizeof key || !(sizeof kb_reexports / sizeof *kb_reexports)) return NULL;
    const struct kb_reexport_ent *e = bsearch(key, kb_reexports, sizeof kb_reexports / sizeof *kb_reexports,
                                              sizeof *kb_reexports, kb_modattr_cmp);
    return e ? e->target : NULL;
}

/* ------------------------------------------------------------------ environment index */
/* The overlay `safepickle kb index` writes (analyzer/cli/kbindex.py): loaded once per process
 * from $SAFEPICKLE_KB_INDEX (empty: none) or SPA_KB_INDEX_DEFAULT, then read-only - the one
 * piece of process state of the analyzer, immutable after pthread_once. Missing or
 * unreadable: no overlay (the KB alone decides); malformed lines are skipped and counted.
 * Entries: @module NAME, @modattr MODULE:ATTR TARGET, MODULE:NAME CAT. Two steps:
 * - the probe (cheap: one stat) fixes which file this process uses and its identity digest
 *   (spa_kb_index_digest, part of the persistent verdict cache's key);
 * - the table (lazy, at the first lookup) reads that very file (same dev, inode, size, mtime,
 *   ctime, else it is not used) and checks its header's environment digest: SHA-256 over
 *   "PATH\tMTIME_NS\n" of each `# env PATH` line (-1 when absent) must equal `# env-digest`,
 *   or the index is stale (packages were installed, removed or upgraded since it was built). */
#ifndef SPA_KB_INDEX_DEFAULT
#define SPA_KB_INDEX_DEFAULT "/usr/local/share/safepickle/kb-index.tsv"
#endif
#define KB_OVL_MAX (256u << 20)
typedef struct kb_ovl_ent { const char *key, *val; uint64_t hash; uint8_t kind; } kb_ovl_ent;
static struct {
    char *text;
    kb_ovl_ent *tab;
    size_t cap, n, bad;
    char path[512];
    char status[700];
    spa_kb_index_state state;
    struct stat id;          /* the probe's stat of the index */
    uint8_t digest[32];      /* identity digest (spa_kb_index_digest) */
} kb_ovl;
static pthread_once_t kb_probe_once = PTHREAD_ONCE_INIT, kb_ovl_once = PTHREAD_ONCE_INIT;

static uint64_t kb_hash(uint8_t kind, const char *k, size_t n) {
    uint64_t h = 1469598103934665603ull ^ kind;
    for (size_t i = 0; i < n; i++) h = (h ^ (uint8_t)k[i]) * 1099511628211ull;
    return h;
}

static void kb_ovl_put(uint8_t kind, const char *key, const char *val) {
    uint64_t h = kb_hash(kind, key, strlen(key));
    size_t i = (size_t)h & (kb_ovl.cap - 1);
    while (kb_ovl.tab[i].key) {
        if (kb_ovl.tab[i].hash == h && kb_ovl.tab[i].kind == kind && !strcmp(kb_ovl.tab[i].key, key)) return;
        i = (i + 1) & (kb_ovl.cap - 1);
    }
    kb_ovl.tab[i] = (kb_ovl_ent){ key, val, h, kind };
    kb_ovl.n++;
}

static const char *kb_ovl_get(uint8_t kind, const char *key, size_t n) {
    if (!kb_ovl.tab) return NULL;
    uint64_t h = kb_hash(kind, key, n);
    for (size_t i = (size_t)h & (kb_ovl.cap - 1); kb_ovl.tab[i].key; i = (i + 1) & (kb_ovl.cap - 1))
        if (kb_ovl.tab[i].hash == h && kb_ovl.tab[i].kind == kind && !strncmp(kb_ovl.tab[i].key, key, n) &&
            kb_ovl.tab[i].key[n] == '\0')
            return kb_ovl.tab[i].val;
    return NULL;
}

static void kb_ovl_fail(spa_kb_index_state st, const char *fmt, const char *a, const char *b) {
    kb_ovl.state = st;
    spa_fmt(kb_ovl.status, sizeof kb_ovl.status, fmt, a, b ? b : "");
}

/* Which file, and its identity digest: "none" when there is none to use. */
static void kb_probe(void) {
    const char *env = getenv("SAFEPICKLE_KB_INDEX");
    const char *path = env ? env : SPA_KB_INDEX_DEFAULT;
    spa_sha256 h;
    spa_sha256_init(&h);
    spa_sha256_update(&h, "spa-kb-index", 12);
    spa_fmt(kb_ovl.path, sizeof kb_ovl.path, "%s", path);
    kb_ovl.state = SPA_KBIDX_OK;
    if (!path[0]) kb_ovl_fail(SPA_KBIDX_MISSING, "no index (SAFEPICKLE_KB_INDEX is empty)%s%s", "", NULL);
    else if (stat(path, &kb_ovl.id) != 0)
        kb_ovl_fail(errno == ENOENT ? SPA_KBIDX_MISSING : SPA_KBIDX_UNREADABLE, "no index at %s (%s)", path, strerror(errno));
    else if (!S_ISREG(kb_ovl.id.st_mode) || kb_ovl.id.st_size > (off_t)KB_OVL_MAX)
        kb_ovl_fail(SPA_KBIDX_UNREADABLE, "index %s is not a regular file of at most 256 MiB%s", path, NULL);
    if (kb_ovl.state == SPA_KBIDX_OK) {
        const struct stat *s = &kb_ovl.id;
        uint64_t v[7] = { (uint64_t)s->st_dev, (uint64_t)s->st_ino, (uint64_t)s->st_size,
                          (uint64_t)s->st_mtim.tv_sec, (uint64_t)s->st_mtim.tv_nsec,
                          (uint64_t)s->st_ctim.tv_sec, (uint64_t)s->st_ctim.tv_nsec };
        spa_sha256_update(&h, path, strlen(path) + 1);
        spa_sha256_update(&h, v, sizeof v);
    } else {
        spa_sha256_update(&h, "none", 4);
    }
    spa_sha256_final(&h, kb_ovl.digest);
}

/* The header's `# env` lines against the environment now: false when stale. */
static bool kb_env_check(char *t, size_t n, char *want, size_t wn) {
    spa_sha256 h;
    uint8_t d[32];
    bool have = false;
    if (wn) want[0] = '\0';
    spa_sha256_init(&h);
    char *p = malloc(4096 + 32); /* off the stack: this may run inside a hook */
    if (!p) return false;
    for (char *l = t; l < t + n && *l == '#';) {
        char *e = memchr(l, '\n', (size_t)(t + n - l));
        size_t ln = e ? (size_t)(e - l) : (size_t)(t + n - l);
        if (ln > 6 && !memcmp(l, "# env ", 6) && ln - 6 < 4096) {
            memcpy(p, l + 6, ln - 6);
            p[ln - 6] = '\0';
            struct stat st;
            long long m = stat(p, &st) == 0 ? (long long)st.st_mtim.tv_sec * 1000000000ll + st.st_mtim.tv_nsec : -1;
            int k = spa_fmt(p + ln - 6, 32, "\t%lld\n", m);
            if (k > 0) spa_sha256_update(&h, p, ln - 6 + (size_t)k);
        } else if (ln == 13 + 64 && !memcmp(l, "# env-digest ", 13)) {
            memcpy(want, l + 13, 64);
            want[64] = '\0';
            have = true;
        }
        l = e ? e + 1 : t + n;
    }
    free(p);
    if (!have) { if (wn) want[0] = '\0'; return false; }
    spa_sha256_final(&h, d);
    char hex[65];
    for (int i = 0; i < 32; i++) spa_fmt(hex + 2 * i, 3, "%02x", d[i]);
    return !strcmp(hex, want);
}

static void kb_ovl_load(void) {
    pthread_once(&kb_probe_once, kb_probe);
    if (kb_ovl.state != SPA_KBIDX_OK) return;
    const char *path = kb_ovl.path;
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    struct stat st;
    if (fd < 0 || fstat(fd, &st)) {
        kb_ovl_fail(SPA_KBIDX_UNREADABLE, "index %s could not be opened (%s)", path, strerror(errno));
        if (fd >= 0) close(fd);
        return;
    }
    const struct stat *o = &kb_ovl.id;
    if (st.st_dev != o->st_dev || st.st_ino != o->st_ino || st.st_size != o->st_size ||
        st.st_mtim.tv_sec != o->st_mtim.tv_sec || st.st_mtim.tv_nsec != o->st_mtim.tv_nsec ||
        st.st_ctim.tv_sec != o->st_ctim.tv_sec || st.st_ctim.tv_nsec != o->st_ctim.tv_nsec) {
        close(fd);
        kb_ovl_fail(SPA_KBIDX_UNREADABLE, "index %s changed since this process first looked at it: not used "
                    "(restart the process)%s", path, NULL);
        return;
    }
    size_t n = (size_t)st.st_size, got = 0, lines = 0;
    char *t = malloc(n + 1);
    while (t && got < n) {
        ssize_t k = pread(fd, t + got, n - got, (off_t)got);
        if (k < 0 && errno == EINTR) continue;
        if (k <= 0) break;
        got += (size_t)k;
    }
    close(fd);
    if (!t || got != n) { free(t); kb_ovl_fail(SPA_KBIDX_UNREADABLE, "index %s could not be read%s", path, NULL); return; }
    t[n] = '\0';
    char want[65];
    bool fresh = kb_env_check(t, n, want, sizeof want);
    for (size_t i = 0; i < n; i++) lines += t[i] == '\n';
    size_t cap = 64;
    while (cap < 2 * (lines + 1)) cap *= 2;
    kb_ovl.tab = calloc(cap, sizeof *kb_ovl.tab);
    if (!kb_ovl.tab) { free(t); kb_ovl_fail(SPA_KBIDX_UNREADABLE, "index %s: out of memory%s", path, NULL); return; }
    kb_ovl.cap = cap;
    kb_ovl.text = t;
    for (char *l = t, *e; l < t + n; l = e + 1) {
        e = strchr(l, '\n');
        if (!e) e = t + n;
        *e = '\0';
        if (!*l || *l == '#') continue;
        char *f1 = strchr(l, '\t'), *f2 = f1 ? strchr(f1 + 1, '\t') : NULL;
        if (!f1) { kb_ovl.bad++; continue; }
        *f1++ = '\0';
        if (f2) *f2++ = '\0';
        if (!strcmp(l, "@module")) kb_ovl_put(KBO_MODULE, f1, "");
        else if (!strcmp(l, "@modattr") && f2 && strchr(f1, ':')) kb_ovl_put(KBO_MODATTR, f1, f2);
        else if (!strcmp(l, "@shared") && strchr(f1, ':')) kb_ovl_put(KBO_SHARED, f1, "");
        else if (l[0] != '@' && strchr(l, ':') && kb_cat_parse(f1, strlen(f1)) != SPA_KB_UNKNOWN) kb_ovl_put(KBO_CAT, l, f1);
        else kb_ovl.bad++;
    }
    if (!want[0]) kb_ovl.state = SPA_KBIDX_UNREADABLE;
    else if (!fresh) kb_ovl.state = SPA_KBIDX_STALE;
    spa_fmt(kb_ovl.status, sizeof kb_ovl.status, "index %s: %zu entries, %zu malformed lines skipped%s", path,
            kb_ovl.n, kb_ovl.bad,
            !want[0] ? "; UNVERIFIABLE: no environment digest in its header (written by an older safepickle): "
                       "rebuild it with `safepickle kb index`"
            : !fresh ? "; STALE: the Python packages changed since it was built (its environment digest no "
                       "longer matches): rebuild it with `safepickle kb index`" : "; up to date");
}

static bool kb_ovl_ready(void) {
    pthread_once(&kb_ovl_once, kb_ovl_load);
    return kb_ovl.tab != NULL;
}

const char *spa_kb_index_status(void) {
    kb_ovl_ready();
    return kb_ovl.status;
}

spa_kb_index_state spa_kb_index_check(void) {
    kb_ovl_ready();
    return kb_ovl.state;
}

void spa_kb_index_digest(uint8_t out[32]) {
    pthread_once(&kb_probe_once, kb_probe);
    memcpy(out, kb_ovl.digest, 32);
}

bool spa_kb_importable(const char *module) {
    if (!module) return true;
    if (!module[0] || module[0] == '.' || strchr(module, '/') || strstr(module, "..") ||
        module[strlen(module) - 1] == '.')
        return false;
    if (!kb_ovl_ready()) return true;
    const char *dot = strchr(module, '.');
    size_t tn = dot ? (size_t)(dot - module) : strlen(module);
    if (kb_ovl_get(KBO_MODULE, module, tn)) return true;
    char top[128];
    if (tn >= sizeof top) return true;
    memcpy(top, module, tn);
    top[tn] = '\0';
    return spa_kb_is_stdlib(top);
}

typedef struct kb_cur { const kb_line *t; size_t n, i; } kb_cur;

static void kb_begin(kb_cur *c) { c->t = kb_lines; c->n = sizeof kb_lines / sizeof kb_lines[0]; c->i = 0; }
/* Directive lines only. */
static void kb_begin_dir(kb_cur *c) { c->t = kb_dlines; c->n = sizeof kb_dlines / sizeof kb_dlines[0]; c->i = 0; }

/* Next line of the table. */
static bool kb_next(kb_cur *c, kb_line *l) {
    if (c->i >= c->n) return false;
    *l = c->t[c->i++];
    return true;
}

bool spa_kb_line(size_t i, const char *f[3], size_t fl[3], int *nf, bool *stdlib) {
    if (i >= sizeof kb_lines / sizeof kb_lines[0]) return false;
    for (int k = 0; k < KB_FIELDS; k++) { f[k] = kb_lines[i].f[k]; fl[k] = kb_lines[i].fl[k]; }
    *nf = kb_lines[i].nf;
    *stdlib = kb_lines[i].stdlib;
    return true;
}

static bool kb_eq(const char *a, size_t an, const char *b) {
    return strlen(b) == an && !memcmp(a, b, an);
}

/* s equals key or starts with key + "." */
static bool kb_prefix(const char *s, const char *key, size_t kn) {
    return !strncmp(s, key, kn) && (s[kn] == '\0' || s[kn] == '.');
}

static bool kb_fnmatch(const char *pat, size_t pn, const char *s) {
    char buf[128];
    if (pn >= sizeof buf) return false;
    memcpy(buf, pat, pn);
    buf[pn] = '\0';
    return fnmatch(buf, s, 0) == 0;
}

/* ------------------------------------------------------------------ modules */
/* Called for every global and call the classifier judges (and by the VM for
 * every GLOBAL): a walk of the directive lines that looks no further than a
 * first byte for the modules no alias starts with, and no vsnprintf unless an
 * alias applies. */
const char *spa_kb_canon(const char *module, char *buf, size_t n) {
    if (!n) return buf;
    for (size_t i = 0; i < sizeof kb_dlines / sizeof kb_dlines[0]; i++) {
        const kb_line *l = &kb_dlines[i];
        if (l->nf < 3 || (l->fl[1] && l->f[1][0] != module[0]) || !kb_eq(l->f[0], l->fl[0], "@alias")) continue;
        if (!kb_prefix(module, l->f[1], l->fl[1])) continue;
        spa_fmt(buf, n, "%.*s%s", (int)l->fl[2], l->f[2], module + l->fl[1]);
        return buf;
    }
    size_t k = 0; /* buf = module, truncated as spa_fmt would */
    for (; module[k] && k + 1 < n; k++) buf[k] = module[k];
    buf[k] = '\0';
    return buf;
}

/* Is `top` (one component) a top-level module key of the chosen blob(s)? Returns its
 * category through *cat when it is. */
static bool kb_top_key(const char *top, size_t tn, bool stdlib_only, spa_kbcat *cat) {
    kb_cur c;
    kb_line l;
    kb_begin(&c);
    while (kb_next(&c, &l)) {
        if (stdlib_only && !l.stdlib) break;
        if (l.nf < 2) continue;
        if (l.f[0][0] == '@') {
            if (l.nf >= 3 && kb_eq(l.f[0], l.fl[0], "@alias") && l.fl[1] == tn &&
                !memcmp(l.f[1], top, tn)) {
                char canon[160], tmp[160];
                spa_fmt(tmp, sizeof tmp, "%.*s", (int)tn, top);
                spa_kb_canon(tmp, canon, sizeof canon);
                if (cat) {
                    spa_kbhit h;
                    *cat = spa_kb_judge(canon, "", &h);
                }
                return true;
            }
            continue;
        }
        if (l.fl[0] == tn && !memcmp(l.f[0], top, tn) && !memchr(l.f[0], ':', l.fl[0])) {
            if (cat) *cat = kb_cat_parse(l.f[1], l.fl[1]);
            return true;
        }
    }
    return false;
}

bool spa_kb_is_stdlib(const char *module) {
    if (!module) return false;
    const char *dot = strchr(module, '.');
    size_t tn = dot ? (size_t)(dot - module) : strlen(module);
    return tn > 0 && kb_top_key(module, tn, true, NULL);
}

static bool kb_is_dunder(const char *s, size_t n) {
    return n > 4 && s[0] == '_' && s[1] == '_' && s[n - 1] == '_' && s[n - 2] == '_';
}

static void kb_setkey(spa_kbhit *h, const char *k, size_t kn) {
    if (kn >= sizeof h->key) kn = sizeof h->key - 1;
    memcpy(h->key, k, kn);
    h->key[kn] = '\0';
}

static bool kb_dangerous(spa_kbcat c) {
    return c != SPA_KB_DATA && c != SPA_KB_UNKNOWN && c != SPA_KB_STDLIB_OTHER;
}

/* ------------------------------------------------------------------ judge */
static bool kb_directive(const char *dir, const char *module, const char *name);
static spa_kbcat kb_judge_depth(const char *module, const char *name, spa_kbhit *hit, int depth);

/* Walk the dotted components of `name`: a component that is itself a known top-level
 * module reaches that module (torch + serialization.os.system reaches os.system). */
static spa_kbcat kb_components(const char *name, spa_kbhit *hit, int depth) {
    const char *s = name;
    while (*s) {
        const char *dot = strchr(s, '.');
        size_t cn = dot ? (size_t)(dot - s) : strlen(s);
        spa_kbcat topcat = SPA_KB_UNKNOWN;
        if (cn && cn < 64 && kb_top_key(s, cn, false, &topcat)) {
            if (dot) {
                char mod[64];
                spa_fmt(mod, sizeof mod, "%.*s", (int)cn, s);
                spa_kbhit sub;
                spa_kbcat c = kb_judge_depth(mod, dot + 1, &sub, depth + 1);
                if (c != SPA_KB_DATA && c != SPA_KB_UNKNOWN) {
                    spa_fmt(hit->key, sizeof hit->key, "%s", sub.key);
                    hit->how = SPA_KBH_COMPONENT;
                    hit->stdlib = sub.stdlib;
                    return c;
                }
            } else if (kb_dangerous(topcat)) {
                kb_setkey(hit, s, cn);
                hit->how = SPA_KBH_COMPONENT;
                return topcat;
            }
        }
        if (!dot) break;
        s = dot + 1;
    }
    return SPA_KB_UNKNOWN;
}

/* The steps of kb_judge_depth, in order; each returns true when it decided
 * (hit->cat and hit->how set). */

/* 1. importing the module acts by itself */
static bool kb_step_effect(const char *cm, spa_kbhit *hit) {
    {
        const char *m = strstr(cm, ".__main__");
        if (m && (m[9] == '\0' || m[9] == '.')) {
            spa_fmt(hit->key, sizeof hit->key, "%s", "*.__main__");
            hit->how = SPA_KBH_EFFECT;
            { hit->cat = SPA_KB_CODE_EXEC; return true; }
        }
        kb_cur c;
        kb_line l;
        kb_begin_dir(&c);
        while (kb_next(&c, &l)) {
            if (l.nf >= 2 && kb_eq(l.f[0], l.fl[0], "@import_effect") &&
                !strncmp(cm, l.f[1], l.fl[1]) && (cm[l.fl[1]] == '\0' || cm[l.fl[1]] == '.')) {
                kb_setkey(hit, l.f[1], l.fl[1]);
                hit->how = SPA_KBH_EFFECT;
                { hit->cat = SPA_KB_CODE_EXEC; return true; }
            }
        }
    }

    return false;
}

/* 1b. the first name component is a module-valued attribute (see kb_judge_depth) */
static bool kb_step_modattr(const char *module, const char *cm, const char *name, size_t nl, spa_kbhit *hit,
                            int depth) {
    if (nl) {
        const char *dot = strchr(name, '.');
        char first[128];
        size_t fn = dot ? (size_t)(dot - name) : nl;
        const char *tgt = NULL;
        if (fn < sizeof first) {
            memcpy(first, name, fn);
            first[fn] = '\0';
            tgt = spa_kb_modattr(module, first);
            if (!tgt && strcmp(module, cm)) tgt = spa_kb_modattr(cm, first);
        }
        if (tgt) {
            spa_kbcat c = SPA_KB_REFLECTION;
            if (dot) {
                spa_kbhit sub;
                spa_kbcat sc = kb_judge_depth(tgt, dot + 1, &sub, depth + 1);
                if (kb_dangerous(sc)) c = sc;
            }
            spa_fmt(hit->key, sizeof hit->key, "@modattr %s:%s=%s", cm, first, tgt);
            hit->how = SPA_KBH_MODATTR;
            { hit->cat = c; return true; }
        }
    }

    return false;
}

/* 1c. the first name component is a callable bound here but defined elsewhere
 * (reexport.tsv): judged as its definition when the KB judges that other than data */
static bool kb_step_reexport(const char *module, const char *cm, const char *name, size_t nl, spa_kbhit *hit,
                             int depth) {
    if (!nl) return false;
    const char *dot = strchr(name, '.');
    char first[128];
    size_t fn = dot ? (size_t)(dot - name) : nl;
    if (fn >= sizeof first) return false;
    memcpy(first, name, fn);
    first[fn] = '\0';
    const char *tgt = kb_reexport(cm, first);
    if (!tgt && strcmp(module, cm)) tgt = kb_reexport(module, first);
    const char *colon = tgt ? strchr(tgt, ':') : NULL;
    if (!colon) return false;
    char tm[160], tn[256];
    if ((size_t)(colon - tgt) >= sizeof tm) return false;
    memcpy(tm, tgt, (size_t)(colon - tgt));
    tm[colon - tgt] = '\0';
    int w = spa_fmt(tn, sizeof tn, "%s%s", colon + 1, dot ? dot : "");
    if (w < 0 || (size_t)w >= sizeof tn) return false;
    spa_kbhit sub;
    memset(&sub, 0, sizeof sub);
    spa_kbcat c = kb_judge_depth(tm, tn, &sub, depth + 1);
    if (c == SPA_KB_DATA || c == SPA_KB_UNKNOWN) return false;
    spa_fmt(hit->key, sizeof hit->key, "@reexport %s:%s=%s", cm, first, tgt);
    hit->how = sub.how == SPA_KBH_EFFECT ? SPA_KBH_EXACT : sub.how;
    hit->cat = c;
    return true;
}

/* 2. exact module:name entries (longest module wins) */
static bool kb_step_exact(const char *path, spa_kbhit *hit) {
    {
        kb_cur c;
        kb_line l;
        kb_begin(&c);
        size_t best = 0;
        spa_kbcat bc = SPA_KB_UNKNOWN;
        while (kb_next(&c, &l)) {
            if (l.nf < 2 || l.f[0][0] == '@' || l.f[0][0] == '*') continue;
            const char *colon = memchr(l.f[0], ':', l.fl[0]);
            if (!colon) continue;
            size_t mn = (size_t)(colon - l.f[0]);
            if (mn <= best || strncmp(path, l.f[0], mn) || path[mn] != '.') continue;
            const char *rest = path + mn + 1;
            const char *pat = colon + 1;
            size_t pn = l.fl[0] - mn - 1;
            bool ok;
            if (pn && (pat[0] == '*' || pat[pn - 1] == '*'))
                ok = !strchr(rest, '.') && kb_fnmatch(pat, pn, rest);
            else
                ok = kb_eq(pat, pn, rest);
            if (!ok) continue;
            best = mn;
            bc = kb_cat_parse(l.f[1], l.fl[1]);
            kb_setkey(hit, l.f[0], l.fl[0]);
        }
        if (best) {
            hit->how = SPA_KBH_EXACT;
            { hit->cat = bc; return true; }
        }
    }

    return false;
}

/* 3. dunder attributes (numpy.__builtins__, f.__globals__) are reflection */
static bool kb_step_dunder(const char *name, spa_kbhit *hit) {
    {
        const char *s = name;
        while (*s) {
            const char *dot = strchr(s, '.');
            size_t cn = dot ? (size_t)(dot - s) : strlen(s);
            if (kb_is_dunder(s, cn)) {
                kb_setkey(hit, s, cn);
                hit->how = SPA_KBH_COMPONENT;
                { hit->cat = SPA_KB_REFLECTION; return true; }
            }
            if (!dot) break;
            s = dot + 1;
        }
    }

    return false;
}

/* 6. third-party: reconstructor name patterns, then data modules, the environment
 * index, then verbs; UNKNOWN when nothing matches */
static spa_kbcat kb_step_thirdparty(const char *cm, const char *name, bool have_mod, spa_kbhit *hit) {
    const char *last = strrchr(name, '.');
    last = last ? last + 1 : name;
    if (!hit->dotted) {
        kb_cur c;
        kb_line l;
        kb_begin(&c);
        while (kb_next(&c, &l)) {
            if (l.nf < 2 || l.fl[0] < 3 || l.f[0][0] != '*' || l.f[0][1] != ':') continue;
            if (kb_fnmatch(l.f[0] + 2, l.fl[0] - 2, name)) {
                kb_setkey(hit, l.f[0], l.fl[0]);
                hit->how = SPA_KBH_PATTERN;
                return hit->cat = kb_cat_parse(l.f[1], l.fl[1]);
            }
        }
        if (have_mod) { /* data module, plain name */
            hit->how = SPA_KBH_MODULE;
            return hit->cat = SPA_KB_DATA;
        }
    }
    /* 6b. the environment index: what the function reaches, or inert (`data`) */
    if (kb_ovl_ready()) {
        const char *v = NULL;
        char key[sizeof hit->path];
        int kn = spa_fmt(key, sizeof key, "%s:%s", cm, name);
        if (kn > 0 && (size_t)kn < sizeof key) v = kb_ovl_get(KBO_CAT, key, (size_t)kn);
        if (v) {
            spa_fmt(hit->key, sizeof hit->key, "index %s", key);
            hit->how = SPA_KBH_INDEX;
            return hit->cat = kb_cat_parse(v, strlen(v));
        }
    }
    {
        kb_cur c;
        kb_line l;
        kb_begin_dir(&c);
        while (kb_next(&c, &l)) {
            if (l.nf < 3 || !kb_eq(l.f[0], l.fl[0], "@verb")) continue;
            if (kb_fnmatch(l.f[1], l.fl[1], last)) {
                spa_fmt(hit->key, sizeof hit->key, "@verb %.*s", (int)l.fl[1], l.f[1]);
                hit->how = SPA_KBH_VERB;
                return hit->cat = kb_cat_parse(l.f[2], l.fl[2]);
            }
        }
    }
    hit->key[0] = '\0';
    hit->how = SPA_KBH_NONE;
    return hit->cat = SPA_KB_UNKNOWN;
}


static spa_kbcat kb_judge_depth(const char *module, const char *name, spa_kbhit *hit, int depth) {
    memset(hit, 0, sizeof *hit);
    if (!module || !name || depth > 8) {
        hit->how = SPA_KBH_TOOLONG;
        spa_fmt(hit->key, sizeof hit->key, "%s", "(dynamic)");
        return hit->cat = SPA_KB_REFLECTION;
    }
    char cm[200];
    spa_kb_canon(module, cm, sizeof cm);
    size_t ml = strlen(cm), nl = strlen(name);
    if (ml + 1 + nl + 1 > sizeof hit->path || ml >= sizeof cm - 1) {
        hit->how = SPA_KBH_TOOLONG;
        spa_fmt(hit->key, sizeof hit->key, "%s", "(name too long)");
        return hit->cat = SPA_KB_REFLECTION;
    }
    if (nl) spa_fmt(hit->path, sizeof hit->path, "%s.%s", cm, name);
    else spa_fmt(hit->path, sizeof hit->path, "%s", cm);
    hit->modlen = ml;
    hit->dotted = strchr(name, '.') != NULL;
    hit->stdlib = spa_kb_is_stdlib(cm);
    const char *path = hit->path;

    /* 1, 1b, 2, 3: the module's import effect, module-valued attributes, exact
     * entries, dunder attributes */
    if (kb_step_effect(cm, hit) || kb_step_modattr(module, cm, name, nl, hit, depth) ||
        kb_step_reexport(module, cm, name, nl, hit, depth) || kb_step_exact(path, hit) ||
        kb_step_dunder(name, hit))
        return hit->cat;

    /* 4. dotted components that reach another module */
    if (hit->dotted || (nl && !hit->stdlib)) {
        spa_kbhit sub;
        memset(&sub, 0, sizeof sub);
        spa_kbcat cc = kb_components(name, &sub, depth);
        if (cc != SPA_KB_UNKNOWN) {
            memcpy(hit->key, sub.key, sizeof hit->key);
            hit->how = SPA_KBH_COMPONENT;
            return hit->cat = cc;
        }
    }

    /* 5. longest module-prefix key */
    spa_kbcat mc = SPA_KB_UNKNOWN;
    bool have_mod = false;
    {
        kb_cur c;
        kb_line l;
        kb_begin(&c);
        size_t best = 0;
        while (kb_next(&c, &l)) {
            if (l.nf < 2 || l.f[0][0] == '@' || l.f[0][0] == '*') continue;
            if (memchr(l.f[0], ':', l.fl[0])) continue;
            if (l.fl[0] <= best || !kb_prefix(path, l.f[0], l.fl[0])) continue;
            best = l.fl[0];
            mc = kb_cat_parse(l.f[1], l.fl[1]);
            kb_setkey(hit, l.f[0], l.fl[0]);
            have_mod = true;
        }
    }
    if (have_mod && mc != SPA_KB_DATA) {
        hit->how = SPA_KBH_MODULE;
        return hit->cat = mc;
    }
    if (hit->stdlib) { /* data module, dotted name: outside the data-safe set */
        if (have_mod && !hit->dotted) {
            hit->how = SPA_KBH_MODULE;
            return hit->cat = SPA_KB_DATA;
        }
        hit->how = SPA_KBH_MODULE;
        return hit->cat = SPA_KB_STDLIB_OTHER;
    }

    return kb_step_thirdparty(cm, name, have_mod, hit);
}

spa_kbcat spa_kb_judge(const char *module, const char *name, spa_kbhit *hit) {
    return kb_judge_depth(module, name, hit, 0);
}

bool spa_kb_nested_loader(const char *module, const char *name) {
    return kb_directive("@nested", module, name);
}

bool spa_kb_raw_loader(const char *module, const char *name) {
    return kb_directive("@rawload", module, name);
}

bool spa_kb_typearg(const char *module, const char *name) {
    return kb_directive("@typearg", module, name);
}

bool spa_kb_typeref(const char *module, const char *name) {
    return kb_directive("@typeref", module, name);
}

bool spa_kb_partial(const char *module, const char *name) {
    return kb_directive("@partial", module, name);
}

bool spa_kb_apply(const char *module, const char *name) {
    return kb_directive("@apply", module, name);
}

bool spa_kb_tblineno(const char *module, const char *name) {
    return kb_directive("@tblineno", module, name);
}

bool spa_kb_mapview(const char *module, const char *name) {
    return kb_directive("@mapview", module, name);
}

/* The KB's own lines, then the environment index's enum classes (kbindex.py). */
bool spa_kb_shared(const char *module, const char *name) {
    if (kb_directive("@shared", module, name)) return true;
    if (!module || !name || !kb_ovl_ready()) return false;
    char cm[200], key[400];
    spa_kb_canon(module, cm, sizeof cm);
    int kn = spa_fmt(key, sizeof key, "%s:%s", cm, name);
    return kn > 0 && (size_t)kn < sizeof key && kb_ovl_get(KBO_SHARED, key, (size_t)kn) != NULL;
}

bool spa_kb_fileload(const char *module, const char *name) {
    return kb_directive("@fileload", module, name);
}

/* Is there a line `DIRECTIVE MODULE:NAME` (module canonicalised)? The classifier
 * asks for every call it judges: the NAME part is compared first and the
 * module canonicalised only for a line whose NAME matches. */
static bool kb_directive(const char *dir, const char *module, const char *name) {
    if (!module || !name) return false;
    char cm[200];
    size_t dl = strlen(dir), nl = strlen(name), ml = SIZE_MAX; /* SIZE_MAX: cm not made yet */
    for (size_t i = 0; i < sizeof kb_dlines / sizeof kb_dlines[0]; i++) {
        const kb_line *l = &kb_dlines[i];
        size_t fl = l->fl[1];
        if (l->nf < 2 || l->fl[0] != dl || memcmp(l->f[0], dir, dl) != 0) continue;
        if (fl < nl + 1 || l->f[1][fl - nl - 1] != ':' || memcmp(l->f[1] + fl - nl, name, nl) != 0) continue;
        if (ml == SIZE_MAX) {
            spa_kb_canon(module, cm, sizeof cm);
            ml = strlen(cm);
        }
        if (fl == ml + 1 + nl && !memcmp(l->f[1], cm, ml)) return true;
    }
    return false;
}

spa_kbcat spa_kb_lookup(const char *module, const char *name) {
    spa_kbhit h;
    return spa_kb_judge(module, name, &h);
}
