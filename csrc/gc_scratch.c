#include "gc_scratch.h"

#include <stdlib.h>
#include <string.h>

/* A slot's block and size change only while the slot is claimed (busy), by its claimer;
 * claiming is a compare-and-swap on `busy`, and the fields are read and written atomically, as
 * other threads read them as hints. No lock: a child process forked while another thread held a
 * slot keeps that slot busy for good and allocates around it. */
typedef struct {
    int busy;
    size_t size;
    void *block;
} scratch_slot;

static scratch_slot slots[GC_SCRATCH_SLOTS];

static int claim(scratch_slot *s)
{
    int expected = 0;
    return __atomic_compare_exchange_n(&s->busy, &expected, 1, 0, __ATOMIC_ACQUIRE, __ATOMIC_RELAXED);
}

static void release(scratch_slot *s)
{
    __atomic_store_n(&s->busy, 0, __ATOMIC_RELEASE);
}

static size_t size_of(const scratch_slot *s)
{
    return __atomic_load_n(&s->size, __ATOMIC_RELAXED);
}

void *gc_scratch_alloc(size_t bytes)
{
    if (bytes == 0)
        bytes = 1;
    if (bytes > GC_SCRATCH_MAX_BYTES)
        return malloc(bytes);
    /* The smallest free block that is large enough; else the smallest free slot grows (a few
     * tries: another thread may take the slot chosen). */
    for (int attempt = 0; attempt < 4; attempt++) {
        scratch_slot *fit = NULL, *smallest = NULL;
        for (int i = 0; i < GC_SCRATCH_SLOTS; i++) {
            scratch_slot *s = &slots[i];
            if (__atomic_load_n(&s->busy, __ATOMIC_RELAXED))
                continue;
            const size_t size = size_of(s);
            if (size >= bytes && (fit == NULL || size < size_of(fit)))
                fit = s;
            if (smallest == NULL || size < size_of(smallest))
                smallest = s;
        }
        scratch_slot *s = fit != NULL ? fit : smallest;
        if (s == NULL)
            break; /* every slot in use */
        if (!claim(s))
            continue;
        if (size_of(s) >= bytes)
            return __atomic_load_n(&s->block, __ATOMIC_RELAXED);
        /* Round up, so that a list that grows a little does not reallocate every call. */
        size_t size = 4096;
        while (size < bytes)
            size *= 2;
        /* The new block is in the slot before the old one is freed: a slot never holds a
         * freed pointer, which malloc could hand to someone whose gc_scratch_free would then
         * match this slot (and a child forked meanwhile would keep it). */
        void *block = malloc(size);
        if (block == NULL) {
            release(s); /* keeps its block; the exact size may still be there */
            return malloc(bytes);
        }
        void *old = __atomic_load_n(&s->block, __ATOMIC_RELAXED);
        __atomic_store_n(&s->block, block, __ATOMIC_RELAXED);
        __atomic_store_n(&s->size, size, __ATOMIC_RELAXED);
        free(old);
        return block;
    }
    return malloc(bytes);
}

void *gc_scratch_calloc(size_t bytes)
{
    void *p = gc_scratch_alloc(bytes);
    if (p != NULL)
        memset(p, 0, bytes > 0 ? bytes : 1);
    return p;
}

void gc_scratch_free(void *p)
{
    if (p == NULL)
        return;
    for (int i = 0; i < GC_SCRATCH_SLOTS; i++) {
        /* p is live and ours: a slot holding it is the one we claimed (no other slot's block
         * can equal it, and a claimed slot changes only by its claimer). */
        if (__atomic_load_n(&slots[i].block, __ATOMIC_RELAXED) == p) {
            release(&slots[i]);
            return;
        }
    }
    free(p);
}

int gc_scratch_in_use(void)
{
    int n = 0;
    for (int i = 0; i < GC_SCRATCH_SLOTS; i++)
        n += __atomic_load_n(&slots[i].busy, __ATOMIC_ACQUIRE) != 0;
    return n;
}

size_t gc_scratch_kept_bytes(void)
{
    size_t n = 0;
    for (int i = 0; i < GC_SCRATCH_SLOTS; i++) {
        scratch_slot *s = &slots[i];
        if (claim(s)) {
            n += size_of(s);
            release(s);
        }
    }
    return n;
}
