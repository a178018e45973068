/* The kernel loops for the baseline instruction set (any x86-64, or any other CPU). */
#define GC_ISA_NAME(name) name##_base
#include "gc_kernels_loops.h"
#include "gc_optim_loops.h"
