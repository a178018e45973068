/* Every optimizer's loops for every dtype. Compiled once per instruction set (see
 * gc_kernels_loops.h); not a header to include elsewhere. */
#include <math.h>

#include "gc_half.h"
#include "gc_optim.h"

#define T float
#define C float
#define LOAD(x) (x)
#define STORE(x) (x)
#define ROUND(x) (x)
#define ALPHA(x) ((float)(x))
#define FMA fmaf
#define SQRT sqrtf
#define WIDE_SCALE(x, c) ((float)((double)(x) * (c)))
#define SCALAR_TAIL 0
#define SUFFIX _f32
#include "gc_optim_kernels.h"

#define T double
#define C double
#define LOAD(x) (x)
#define STORE(x) (x)
#define ROUND(x) (x)
#define ALPHA(x) ((double)(x))
#define FMA fma
#define SQRT sqrt
#define WIDE_SCALE(x, c) ((x) * (c))
#define SCALAR_TAIL 0
#define SUFFIX _f64
#include "gc_optim_kernels.h"

/* float16 storage, float32 arithmetic; torch's half kernel rounds add's alpha to half (via
 * float, as c10 converts a double scalar). */
static inline float round_half(float x)
{
    return gc_half_to_float(gc_float_to_half(x));
}
#define T gc_half
#define C float
#define LOAD(x) gc_half_to_float(x)
#define STORE(x) gc_float_to_half(x)
#define ROUND(x) round_half(x)
#define ALPHA(x) round_half((float)(x))
#define FMA fmaf
#define SQRT sqrtf
#define WIDE_SCALE(x, c) round_half((float)((double)(x) * (c)))
/* torch's scalar loop takes the last length % 32 elements of each float16 row it vectorises
 * (see gc_layout.h). */
#define SCALAR_TAIL GC_TORCH_HALF_TAIL
#define SUFFIX _f16
#include "gc_optim_kernels.h"

/* One walk per optimizer: byte strides to element strides, then the dtype's kernel. */
#define GC_OPTIM_WALK(name)                                                                                     \
    static void name##_walk(void *ctx, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n)                 \
    {                                                                                                           \
        const gc_optim_item *it = ctx;                                                                          \
        ptrdiff_t inc[GC_OPTIM_MAXOPS];                                                                         \
        for (int k = 0; k < it->nops; k++)                                                                      \
            inc[k] = gc_elements(strides[k], it->dtype);                                                        \
        switch (it->dtype) {                                                                                    \
        case GC_FLOAT32:                                                                                        \
            name##_f32(it, ptrs, inc, n);                                                                       \
            break;                                                                                              \
        case GC_FLOAT64:                                                                                        \
            name##_f64(it, ptrs, inc, n);                                                                       \
            break;                                                                                              \
        case GC_FLOAT16:                                                                                        \
            name##_f16(it, ptrs, inc, n);                                                                       \
            break;                                                                                              \
        default:                                                                                                \
            break; /* complex operands arrive as real pairs */                                                  \
        }                                                                                                       \
    }
GC_OPTIMIZERS(GC_OPTIM_WALK)
#undef GC_OPTIM_WALK

void GC_ISA_NAME(gc_fill_optim_table)(gc_optim_table *table)
{
#define GC_OPTIM_FILL(name) table->walk[GC_OPTIM_##name] = name##_walk;
    GC_OPTIMIZERS(GC_OPTIM_FILL)
#undef GC_OPTIM_FILL
}
