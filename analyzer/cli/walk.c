/* walk.c - the file walk behind `safepickle scan PATH...` (see walk.h): sees what
 * a loader sees. Symlinks are followed (a Hugging Face cache snapshot is a folder
 * of links into blobs/), every file and directory is identified by (st_dev,
 * st_ino) so a loop ends and a file reached twice is scanned once, and nothing
 * but a directory is ever opened here: FIFOs, sockets and devices are reported
 * as skipped from their stat(2) type alone. */
#include <dirent.h>
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "walk.h"

/* Named limits of this file. */
#define WALK_MAX_DEPTH 1024u   /* nested directories below one argument */
#define WALK_TAB_MIN   64u     /* first size of the (dev, ino) table; doubles when half full */

typedef struct walk_seen {
    dev_t dev;
    ino_t ino;
    char *path;  /* NULL: a free slot */
    size_t seq;
} walk_seen;

struct walk_state {
    walk_seen *tab;
    size_t cap, n, nfiles, errors;
    walk_fn fn;
    void *ctx;
};

walk_state *walk_new(void) {
    walk_state *w = calloc(1, sizeof *w);
    if (!w) return NULL;
    w->tab = calloc(WALK_TAB_MIN, sizeof *w->tab);
    if (!w->tab) { free(w); return NULL; }
    w->cap = WALK_TAB_MIN;
    return w;
}

void walk_free(walk_state *w) {
    if (!w) return;
    for (size_t i = 0; i < w->cap; i++) free(w->tab[i].path);
    free(w->tab);
    free(w);
}

static size_t walk_hash(dev_t d, ino_t i, size_t cap) {
    uint64_t h = ((uint64_t)d * 0x9E3779B97F4A7C15ull) ^ ((uint64_t)i * 0xC2B2AE3D27D4EB4Full);
    h ^= h >> 29;
    return (size_t)h & (cap - 1);
}

/* The slot of (dev, ino): an existing entry, or a free slot to fill. NULL when
 * the table cannot grow. */
static walk_seen *walk_slot(walk_state *w, dev_t dev, ino_t ino) {
    if ((w->n + 1) * 2 > w->cap) {
        size_t ncap = w->cap * 2;
        walk_seen *nt = calloc(ncap, sizeof *nt);
        if (!nt) return NULL;
        for (size_t i = 0; i < w->cap; i++) {
            if (!w->tab[i].path) continue;
            size_t j = walk_hash(w->tab[i].dev, w->tab[i].ino, ncap);
            while (nt[j].path) j = (j + 1) & (ncap - 1);
            nt[j] = w->tab[i];
        }
        free(w->tab);
        w->tab = nt;
        w->cap = ncap;
    }
    size_t j = walk_hash(dev, ino, w->cap);
    while (w->tab[j].path && !(w->tab[j].dev == dev && w->tab[j].ino == ino)) j = (j + 1) & (w->cap - 1);
    return &w->tab[j];
}

static void walk_report(walk_state *w, walk_kind k, const char *path, const char *target,
                        const char *why, int err) {
    walk_entry e = { k, path, target, NULL, 0, 0, why, err };
    if (k == WALK_ERROR) w->errors++;
    w->fn(w->ctx, &e);
}

static const char *walk_type_name(mode_t m) {
    if (S_ISFIFO(m)) return "a FIFO";
    if (S_ISSOCK(m)) return "a socket";
    if (S_ISCHR(m)) return "a character device";
    if (S_ISBLK(m)) return "a block device";
    return "not a regular file";
}

static int walk_cmp(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static void walk_node(walk_state *w, const char *path, unsigned depth, bool top);

/* The entries of an open directory, sorted, then each walked. */
static void walk_dir(walk_state *w, const char *path, unsigned depth) {
    DIR *d = opendir(path);
    if (!d) {
        int e = errno;
        walk_report(w, WALK_ERROR, path, NULL, "cannot open directory", e);
        return;
    }
    char **names = NULL;
    size_t n = 0, cap = 0;
    bool oom = false;
    for (;;) {
        errno = 0;
        struct dirent *de = readdir(d);
        if (!de) {
            if (errno) walk_report(w, WALK_ERROR, path, NULL, "cannot read directory", errno);
            break;
        }
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..")) continue;
        if (n == cap) {
            size_t nc = cap ? cap * 2 : 32;
            char **nn = realloc(names, nc * sizeof *nn);
            if (!nn) { oom = true; break; }
            names = nn;
            cap = nc;
        }
        if (!(names[n] = strdup(de->d_name))) { oom = true; break; }
        n++;
    }
    closedir(d);
    if (oom) walk_report(w, WALK_ERROR, path, NULL, "out of memory listing the directory", ENOMEM);
    if (n) qsort(names, n, sizeof *names, walk_cmp);
    size_t pl = strlen(path);
    bool slash = pl && path[pl - 1] == '/';
    for (size_t i = 0; i < n; i++) {
        size_t need = pl + 1 + strlen(names[i]) + 1;
        char *child = malloc(need);
        if (!child) walk_report(w, WALK_ERROR, path, NULL, "out of memory", ENOMEM);
        else {
            memcpy(child, path, pl);
            if (!slash) child[pl] = '/';
            strcpy(child + pl + !slash, names[i]);
            walk_node(w, child, depth + 1, false);
            free(child);
        }
        free(names[i]);
    }
    free(names);
}

static void walk_node(walk_state *w, const char *path, unsigned depth, bool top) {
    struct stat st;
    if (lstat(path, &st) != 0) {
        walk_report(w, WALK_ERROR, path, NULL, "cannot stat", errno);
        return;
    }
    char *target = NULL;
    if (S_ISLNK(st.st_mode)) {
        if (stat(path, &st) != 0) {
            int e = errno;
            const char *why = e == ELOOP ? "a symlink loop" : "a dangling symlink";
            /* nothing can be loaded through it; an argument that names one is an error */
            if (top || (e != ENOENT && e != ELOOP && e != ENOTDIR))
                walk_report(w, WALK_ERROR, path, NULL, e == ENOENT || e == ELOOP ? why : "cannot follow the symlink", e);
            else
                walk_report(w, WALK_SKIP, path, NULL, why, e);
            return;
        }
        target = realpath(path, NULL);
    }
    const char *tgt = target ? target : NULL;
    if (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode)) {
        walk_seen *s = walk_slot(w, st.st_dev, st.st_ino);
        if (!s) {
            walk_report(w, WALK_ERROR, path, tgt, "out of memory", ENOMEM);
        } else if (s->path) {
            if (S_ISREG(st.st_mode)) {
                walk_entry e = { WALK_SAME, path, tgt, s->path, s->seq, 0, NULL, 0 };
                w->fn(w->ctx, &e);
            } else if (tgt || top) {  /* a link or argument back into a walked directory */
                walk_report(w, WALK_SKIP, path, tgt, "a directory already walked", 0);
            }
        } else if (!(s->path = strdup(path))) {
            walk_report(w, WALK_ERROR, path, tgt, "out of memory", ENOMEM);
        } else {
            s->dev = st.st_dev;
            s->ino = st.st_ino;
            w->n++;
            if (S_ISREG(st.st_mode)) {
                s->seq = w->nfiles++;
                walk_entry e = { WALK_FILE, path, tgt, NULL, 0, s->seq, NULL, 0 };
                w->fn(w->ctx, &e);
            } else if (depth >= WALK_MAX_DEPTH) {
                walk_report(w, WALK_ERROR, path, tgt, "directories nested too deep", ELOOP);
            } else {
                walk_dir(w, path, depth);
            }
        }
    } else {
        walk_report(w, WALK_SKIP, path, tgt, walk_type_name(st.st_mode), 0);
    }
    free(target);
}

size_t walk_arg(walk_state *w, const char *path, walk_fn fn, void *ctx) {
    size_t before = w->errors;
    w->fn = fn;
    w->ctx = ctx;
    walk_node(w, path, 0, true);
    return w->errors - before;
}
