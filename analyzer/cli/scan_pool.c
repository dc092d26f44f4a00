/* scan_pool.c - `safepickle scan -j N`: N worker threads scan files while the
 * main thread walks the arguments and prints each walk entry's result in
 * walk order, so the output is byte for byte that of -j 1. At most
 * SP_WINDOW_PER_THREAD x N entries are in flight (queued or not yet printed). */
#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>

#include "scan_pool.h"

#define SP_WINDOW_PER_THREAD 4u

typedef struct sp_slot {
    void *item;
    bool done;
} sp_slot;

struct scan_pool {
    pthread_mutex_t mu;
    pthread_cond_t cv_work;    /* a path was submitted, or the pool closes */
    pthread_cond_t cv_done;    /* a worker finished a file */
    sp_slot *ring;
    size_t cap;
    uint64_t next_submit, next_take, next_emit;
    bool closing;
    pthread_t *th;
    unsigned n;
    scan_work_fn work;
    scan_emit_fn emit;
    void *ud;
};

static void *sp_worker(void *arg) {
    scan_pool *p = arg;
    pthread_mutex_lock(&p->mu);
    for (;;) {
        while (p->next_take == p->next_submit && !p->closing) pthread_cond_wait(&p->cv_work, &p->mu);
        if (p->next_take == p->next_submit) break; /* closing, nothing left */
        sp_slot *s = &p->ring[p->next_take++ % p->cap];
        void *item = s->item;
        pthread_mutex_unlock(&p->mu);
        p->work(p->ud, item);
        pthread_mutex_lock(&p->mu);
        s->done = true;
        pthread_cond_signal(&p->cv_done);
    }
    pthread_mutex_unlock(&p->mu);
    return NULL;
}

/* Print the results that are ready, in order; with wait, until `upto`
 * results have been printed. Main thread only. */
static void sp_emit_ready(scan_pool *p, uint64_t upto, bool wait) {
    for (;;) {
        pthread_mutex_lock(&p->mu);
        if (p->next_emit >= upto) { pthread_mutex_unlock(&p->mu); return; }
        sp_slot *s = &p->ring[p->next_emit % p->cap];
        while (wait && !s->done) pthread_cond_wait(&p->cv_done, &p->mu);
        if (!s->done) { pthread_mutex_unlock(&p->mu); return; }
        void *item = s->item;
        s->item = NULL;
        s->done = false;
        p->next_emit++;
        pthread_mutex_unlock(&p->mu);
        p->emit(p->ud, item);
    }
}

scan_pool *scan_pool_new(unsigned nthreads, scan_work_fn work, scan_emit_fn emit, void *ud) {
    scan_pool *p = calloc(1, sizeof *p);
    if (!p) return NULL;
    p->cap = (size_t)nthreads * SP_WINDOW_PER_THREAD;
    p->ring = calloc(p->cap, sizeof *p->ring);
    p->th = calloc(nthreads, sizeof *p->th);
    p->work = work;
    p->emit = emit;
    p->ud = ud;
    if (!p->ring || !p->th) { free(p->ring); free(p->th); free(p); return NULL; }
    pthread_mutex_init(&p->mu, NULL);
    pthread_cond_init(&p->cv_work, NULL);
    pthread_cond_init(&p->cv_done, NULL);
    for (unsigned i = 0; i < nthreads; i++) {
        if (pthread_create(&p->th[i], NULL, sp_worker, p) != 0) break;
        p->n++;
    }
    if (!p->n) { scan_pool_finish(p); return NULL; }
    return p;
}

void scan_pool_submit(scan_pool *p, void *item) {
    sp_emit_ready(p, p->next_submit, false);
    /* window full: wait for the oldest file and print it */
    if (p->next_submit - p->next_emit >= p->cap) sp_emit_ready(p, p->next_submit - p->cap + 1, true);
    pthread_mutex_lock(&p->mu);
    sp_slot *s = &p->ring[p->next_submit % p->cap];
    s->item = item;
    s->done = false;
    p->next_submit++;
    pthread_cond_signal(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
}

void scan_pool_drain(scan_pool *p) {
    sp_emit_ready(p, p->next_submit, true);
}

void scan_pool_finish(scan_pool *p) {
    if (!p) return;
    if (p->n) sp_emit_ready(p, p->next_submit, true);
    pthread_mutex_lock(&p->mu);
    p->closing = true;
    pthread_cond_broadcast(&p->cv_work);
    pthread_mutex_unlock(&p->mu);
    for (unsigned i = 0; i < p->n; i++) pthread_join(p->th[i], NULL);
    pthread_cond_destroy(&p->cv_work);
    pthread_cond_destroy(&p->cv_done);
    pthread_mutex_destroy(&p->mu);
    free(p->ring);
    free(p->th);
    free(p);
}
