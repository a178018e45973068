/* Every optimizer kernel for one dtype (see gc_optim_tmpl.h for the parameters). Included by
 * gc_optim_loops.h once per dtype; adding an optimizer adds its kernel file here. */
#include "gc_optim_tmpl.h"

#include "gc_optim_sgd.h"
#include "gc_optim_adam.h"
#include "gc_optim_average.h"
#include "gc_optim_adagrad.h"
#include "gc_optim_rmsprop.h"
#include "gc_optim_adadelta.h"
#include "gc_optim_adamax.h"
#include "gc_optim_nadam.h"
#include "gc_optim_radam.h"
#include "gc_optim_asgd.h"
#include "gc_optim_rprop.h"

/* The parameters, so the next inclusion can define them afresh. */
#undef EFFECTIVE_GRAD
#undef COUPLED_DECAY
#undef ADD_ALPHA
#undef SCALAR_TAIL
#undef CLIP_ZERO_DIM
#undef WIDE_SCALE
#undef GC_INLINE
#undef KERNEL
#undef GC_CAT
#undef GC_CAT_
#undef T
#undef C
#undef LOAD
#undef STORE
#undef ROUND
#undef ALPHA
#undef FMA
#undef SQRT
#undef SUFFIX
