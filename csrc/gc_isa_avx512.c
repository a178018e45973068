/* The kernel loops again, compiled for AVX-512 (F, VL, BW, DQ) on top of AVX2 + FMA + F16C;
 * used only where the CPU has them (gc_select_isa). The loops are the same C: the lanes are
 * explicit, so 512-bit vectors change no result (see gc_kernels.h), only how many elements an
 * instruction moves. That matters in the caches: a min-char-rnn's gradients (185 kB, in L2)
 * are scaled or clamped at about twice AVX2's rate on one core. */
#include "gc_kernels.h"

#if GC_HAVE_AVX2
#pragma GCC target("avx2,fma,f16c,avx512f,avx512vl,avx512bw,avx512dq")
#define GC_ISA_NAME(name) name##_avx512
#include "gc_kernels_loops.h"
#include "gc_optim_loops.h"
#else
typedef int gc_isa_avx512_unused;
#endif
