/* reader.h - reader facts private to the VM (not part of internal.h). */
#ifndef SPA_READER_H
#define SPA_READER_H
#include "internal.h"
/* True when pointers from spa_in_peek stay valid for the scan's lifetime
 * (an in-memory source): the VM then keeps zero-copy views of constants. */
bool spa_in_stable(const spa_in *in);
/* A second reader over the same source starting at content offset `at`
 * (for a re-run of a stream); NULL for sequential (decompressor) inputs. */
spa_in *spa_in_reopen(spa_arena *ar, const spa_in *in, uint64_t at);
#endif
