/* The kernel loops again, compiled for AVX2 + FMA + F16C; used only where the CPU has them
 * (gc_select_isa). Results are identical to the baseline build's (see gc_kernels.h). */
#include "gc_kernels.h"

#if GC_HAVE_AVX2
#pragma GCC target("avx2,fma,f16c")
#define GC_ISA_NAME(name) name##_avx2
#include "gc_kernels_loops.h"
#include "gc_optim_loops.h"
#else
/* ISO C forbids an empty translation unit. */
typedef int gc_isa_avx2_unused;
#endif
