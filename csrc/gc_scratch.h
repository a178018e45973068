/* Scratch memory for one call (descriptor tables, bounds to sort, per-block partials), kept
 * between calls. Plain C.
 *
 * A call on a list of many arrays needs a few blocks of O(list length) bytes and gives them back
 * before it returns. From malloc, the first such block after another library freed thousands of
 * small chunks pays for glibc sorting and merging them (measured: a 100 kB malloc right after
 * torch's get_total_norm of 1000 tensors took 44-56 us, and gradclip's own call on those 1000
 * arrays 2.4x its time in a quiet loop). Blocks of up to GC_SCRATCH_MAX_BYTES are kept in a few
 * slots and handed out again, so a steady training loop allocates nothing; larger requests, and
 * requests while every slot is in use (other threads, nested calls), go to malloc as before.
 * Kept memory is at most GC_SCRATCH_SLOTS * GC_SCRATCH_MAX_BYTES (8 MB), not seen by tracemalloc.
 */
#ifndef GC_SCRATCH_H
#define GC_SCRATCH_H

#include <stddef.h>

#define GC_SCRATCH_SLOTS 8
#define GC_SCRATCH_MAX_BYTES ((size_t)1 << 20)

/* At least `bytes` (> 0 or not) of uninitialised memory aligned as malloc's, or NULL. */
void *gc_scratch_alloc(size_t bytes);
/* The same, zeroed. */
void *gc_scratch_calloc(size_t bytes);
/* Gives back a block from gc_scratch_alloc/calloc; NULL is ignored. */
void gc_scratch_free(void *p);

/* How many kept blocks are handed out right now, and how many bytes the slots not handed out
 * keep (for tests, between calls: 0 in use means no call forgot to give a block back). */
int gc_scratch_in_use(void);
size_t gc_scratch_kept_bytes(void);

#endif /* GC_SCRATCH_H */
