/* walk.h - the file walk behind `safepickle scan PATH...`: follows symlinks
 * (files and directories) like a loader would, loop-safe, each file reported
 * once; FIFOs, sockets and devices are skipped without being opened;
 * unreadable entries are errors. Implemented in walk.c. */
#ifndef SP_CLI_WALK_H
#define SP_CLI_WALK_H
#include <stddef.h>

typedef enum {
    WALK_FILE = 0, /* a regular file seen for the first time: scan it */
    WALK_SAME,     /* a regular file already reported under another path */
    WALK_SKIP,     /* not a regular file (FIFO, socket, device, dangling link): never opened */
    WALK_ERROR     /* cannot be read: a directory or link we may not look into */
} walk_kind;

typedef struct walk_entry {
    walk_kind kind;
    const char *path;    /* as reached from the argument given */
    const char *target;  /* the resolved path when `path` is a symlink, else NULL */
    const char *same_as; /* WALK_SAME: the path it was first reported under */
    size_t first;        /* WALK_SAME: the `seq` of that first report */
    size_t seq;          /* WALK_FILE: 0, 1, 2, ... in report order */
    const char *why;     /* WALK_SKIP / WALK_ERROR: what it is, or what failed */
    int err;             /* WALK_ERROR: errno */
} walk_entry;

typedef void (*walk_fn)(void *ctx, const walk_entry *e);

typedef struct walk_state walk_state;

/* One state per scan run: files and directories seen by any argument are
 * reported once across all arguments. NULL when out of memory. */
walk_state *walk_new(void);
void walk_free(walk_state *w);

/* Walk one command-line argument (a file or a directory; a symlink to either
 * is followed). Calls fn for each entry, directory entries in byte order of
 * their names. Returns the number of WALK_ERROR entries reported. */
size_t walk_arg(walk_state *w, const char *path, walk_fn fn, void *ctx);
#endif
