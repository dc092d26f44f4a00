/* scan_pool.h - worker threads for `safepickle scan -j N` whose results are
 * printed by the main thread in submission order (output identical to -j 1). */
#ifndef SP_SCAN_POOL_H
#define SP_SCAN_POOL_H

/* work runs in a worker thread on one submitted item (it must touch nothing
 * shared but read-only data and the item); emit runs in the submitting
 * thread, in submission order, and owns the item. */
typedef void (*scan_work_fn)(void *ud, void *item);
typedef void (*scan_emit_fn)(void *ud, void *item);

typedef struct scan_pool scan_pool;
/* NULL if no thread could be started (the caller scans in-line). */
scan_pool *scan_pool_new(unsigned nthreads, scan_work_fn work, scan_emit_fn emit, void *ud);
/* Queue one item; prints the items that are ready, and waits for the
 * oldest when too many are in flight. */
void scan_pool_submit(scan_pool *p, void *item);
/* Print every item in flight, in order (the caller then prints in-line). */
void scan_pool_drain(scan_pool *p);
/* Print every remaining result in order, stop the threads, free the pool. */
void scan_pool_finish(scan_pool *p);
#endif
