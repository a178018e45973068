/* Norm, scale and clamp kernels on one strided run; see gc_kernels.h. */
#include "gc_kernels.h"

#include <math.h>
#include <string.h>

#include "gc_optim.h"


/* ---------------------------------------------------------------------------------------- */
/* Norm bookkeeping                                                                          */

gc_norm gc_norm_from_p(double p)
{
    gc_norm norm = {GC_NORM_POW, p, 1.0};
    if (p == 0.0)
        norm.kind = GC_NORM_ZERO;
    else if (p == 1.0)
        norm.kind = GC_NORM_ONE;
    else if (p == 2.0)
        norm.kind = GC_NORM_TWO;
    else if (p == INFINITY)
        norm.kind = GC_NORM_INF;
    else if (p == -INFINITY)
        norm.kind = GC_NORM_NEGINF;
    return norm;
}

/* ---------------------------------------------------------------------------------------- */
/* Instruction-set dispatch                                                                  */

static gc_kernel_table kernels;

const char *gc_select_isa(const char *request)
{
    int avx2 = 0, avx512 = 0, avx512_all = 0;
#if GC_HAVE_AVX2
    __builtin_cpu_init();
    avx2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && __builtin_cpu_supports("f16c");
    avx512 = avx2 && __builtin_cpu_supports("avx512f");
    avx512_all = avx512 && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512bw") &&
                 __builtin_cpu_supports("avx512dq");
#endif
    if (request != NULL && strcmp(request, "baseline") == 0)
        avx2 = 0;
    if (request != NULL && strcmp(request, "avx2") == 0)
        avx512 = avx512_all = 0;
    if (request != NULL && strcmp(request, "avx2+avx512") == 0)
        avx512_all = 0;
#if GC_HAVE_AVX2
    if (avx2 && avx512_all) {
        gc_fill_kernel_table_avx512(&kernels, 1);
        gc_fill_optim_table_avx512(&gc_optim_kernels);
        return "avx512";
    }
    if (avx2) {
        gc_fill_kernel_table_avx2(&kernels, avx512);
        gc_fill_optim_table_avx2(&gc_optim_kernels);
        return avx512 ? "avx2+avx512" : "avx2";
    }
#endif
    gc_fill_kernel_table_base(&kernels, 0);
    gc_fill_optim_table_base(&gc_optim_kernels);
    return "baseline";
}

double gc_norm_run(gc_dtype dtype, const void *x, ptrdiff_t inc, ptrdiff_t n, const gc_norm *norm, double *lo)
{
    return kernels.norm_run(dtype, x, inc, n, norm, lo);
}

void gc_scale_run(gc_dtype dtype, void *x, ptrdiff_t inc, ptrdiff_t n, double coef)
{
    kernels.scale_run(dtype, x, inc, n, coef);
}

void gc_clamp_run(gc_dtype dtype, void *x, ptrdiff_t inc, ptrdiff_t n, double lo, double hi)
{
    kernels.clamp_run(dtype, x, inc, n, lo, hi);
}
