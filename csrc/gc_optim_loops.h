/* The SGD and Adam loops for every dtype. Compiled once per instruction set (see
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
#define SUFFIX _f32
#include "gc_optim_tmpl.h"

#define T double
#define C double
#define LOAD(x) (x)
#define STORE(x) (x)
#define ROUND(x) (x)
#define ALPHA(x) ((double)(x))
#define FMA fma
#define SQRT sqrt
#define SUFFIX _f64
#include "gc_optim_tmpl.h"

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
#define SUFFIX _f16
#include "gc_optim_tmpl.h"

static void sgd_walk(void *ctx_, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n)
{
    const gc_optim_item *it = ctx_;
    const gc_sgd_options *o = it->options;
    const int momentum = o->momentum != 0.0;
    const ptrdiff_t ip = gc_elements(strides[0], it->dtype), ig = gc_elements(strides[1], it->dtype),
                    ib = momentum ? gc_elements(strides[2], it->dtype) : 1;
    char *buf = momentum ? ptrs[2] : NULL;
    switch (it->dtype) {
    case GC_FLOAT32:
        sgd_run_f32(n, (float *)ptrs[0], ip, (float *)ptrs[1], ig, (float *)buf, ib, it->fresh, o);
        break;
    case GC_FLOAT64:
        sgd_run_f64(n, (double *)ptrs[0], ip, (double *)ptrs[1], ig, (double *)buf, ib, it->fresh, o);
        break;
    case GC_FLOAT16:
        sgd_run_f16(n, (gc_half *)ptrs[0], ip, (gc_half *)ptrs[1], ig, (gc_half *)buf, ib, it->fresh, o);
        break;
    default:
        break; /* complex parameters are rejected by the caller */
    }
}

static void adam_walk(void *ctx_, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n)
{
    const gc_optim_item *it = ctx_;
    const gc_adam_options *o = it->options;
    const ptrdiff_t ip = gc_elements(strides[0], it->dtype), ig = gc_elements(strides[1], it->dtype),
                    im = gc_elements(strides[2], it->dtype), iv = gc_elements(strides[3], it->dtype),
                    ix = o->amsgrad ? gc_elements(strides[4], it->dtype) : 1;
    char *vmax = o->amsgrad ? ptrs[4] : NULL;
    switch (it->dtype) {
    case GC_FLOAT32:
        adam_run_f32(n, (float *)ptrs[0], ip, (float *)ptrs[1], ig, (float *)ptrs[2], im, (float *)ptrs[3], iv,
                     (float *)vmax, ix, it->step, o);
        break;
    case GC_FLOAT64:
        adam_run_f64(n, (double *)ptrs[0], ip, (double *)ptrs[1], ig, (double *)ptrs[2], im, (double *)ptrs[3],
                     iv, (double *)vmax, ix, it->step, o);
        break;
    case GC_FLOAT16:
        adam_run_f16(n, (gc_half *)ptrs[0], ip, (gc_half *)ptrs[1], ig, (gc_half *)ptrs[2], im,
                     (gc_half *)ptrs[3], iv, (gc_half *)vmax, ix, it->step, o);
        break;
    default:
        break;
    }
}

void GC_ISA_NAME(gc_fill_optim_table)(gc_optim_table *table)
{
    table->sgd_walk = sgd_walk;
    table->adam_walk = adam_walk;
}
