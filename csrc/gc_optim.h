/* Optimizer steps over a list of parameters: torch's single-tensor rules. Plain C, no Python.
 *
 * Every optimizer is elementwise over its parameter's operands (parameter, gradient, state
 * buffers of the same shape), so one driver serves them all: an optimizer is
 *   - a kernel file gc_optim_<name>.h: the update of one run of elements, templated by dtype
 *     (included for every dtype and instruction set by gc_optim_loops.h via gc_optim_kernels.h);
 *   - an entry in gc_optim_specs.c: its operands, per-parameter scalars and hyper-parameters;
 *   - a line in GC_OPTIMIZERS below.
 * The glue (py_optim.c) turns the spec into a validated entry point `_C.<name>_step`.
 *
 * Every arithmetic step rounds as torch's CPU kernels round it (see gc_optim_tmpl.h). The caller
 * has validated every operand (dtype, shape, writeability, no aliasing between a parameter's
 * operands); these functions cannot fail.
 */
#ifndef GC_OPTIM_H
#define GC_OPTIM_H

#include <stddef.h>

#include "gc_kernels.h"
#include "gc_layout.h"

/* Every optimizer, one line each: X(name). */
#define GC_OPTIMIZERS(X)                                                                                        \
    X(sgd)                                                                                                      \
    X(adam)                                                                                                     \
    X(average)                                                                                                  \
    X(adagrad)                                                                                                  \
    X(rmsprop)                                                                                                  \
    X(adadelta)                                                                                                 \
    X(adamax)                                                                                                   \
    X(nadam)                                                                                                    \
    X(radam)                                                                                                    \
    X(asgd)                                                                                                     \
    X(rprop)

enum {
#define GC_OPTIM_ENUM(name) GC_OPTIM_##name,
    GC_OPTIMIZERS(GC_OPTIM_ENUM)
#undef GC_OPTIM_ENUM
    GC_OPTIM_COUNT
};

/* Operand slots of one parameter. */
enum { GC_OP_PARAM = 0, GC_OP_GRAD = 1, GC_OP_STATE0 = 2 };
#define GC_OPTIM_MAXOPS GC_MAXOPS
#define GC_OPTIM_MAXH 16       /* hyper-parameters of a group */
#define GC_OPTIM_MAXSCALARS 4  /* per-parameter 0-d float32 state (torch's step tensors...) */
#define GC_OPTIM_MAXDERIVED 8  /* per-parameter values prepared from them */

/* Shared by every optimizer: an optional clip coefficient applied to the gradient first,
 * rounded as clip_grad_norm_ rounds it, and optionally stored back into the gradient. */
typedef struct {
    int has_scale;
    double scale;
    int write_back;
} gc_grad_scaling;

/* A group's hyper-parameters, in its spec's order (flags as 0 or 1), and the call's scaling. */
typedef struct {
    gc_grad_scaling scaling;
    double h[GC_OPTIM_MAXH];
} gc_optim_options;

/* h[GC_OPTIM_LR_SINGLE] (after every spec's own slots): 1 when the group's "lr" is a float32
 * scalar (a NumPy float32, as gradclip passes a float32 Tensor or array lr). torch's Python
 * then computes with lr in float32 -- a 0-d float32 tensor, or a NumPy float32, with Python
 * floats converted to float32 -- so its lr / x, lr * x and 1 - lr * x round to float32 at
 * every operation; with a Python float lr they are float64. These helpers are those
 * expressions, either way. */
#define GC_OPTIM_LR_SINGLE (GC_OPTIM_MAXH - 1)
/* h[GC_OPTIM_LR_TENSOR]: 32 or 64 when "lr" is a 0-d float32/float64 ndarray (how Adam passes
 * a Tensor lr beside Tensor betas: it divides their bias correction, where a number, Python
 * float or NumPy scalar, multiplies its reciprocal), else 0. h[GC_OPTIM_BETA1_KIND] and
 * h[GC_OPTIM_BETA2_KIND]: 32 or 64 when "beta1"/"beta2" is a 0-d float32/float64 ndarray
 * (torch's Tensor betas, which only Adam takes), else 0. Only Adam reads the three. */
#define GC_OPTIM_LR_TENSOR (GC_OPTIM_MAXH - 2)
#define GC_OPTIM_BETA1_KIND (GC_OPTIM_MAXH - 3)
#define GC_OPTIM_BETA2_KIND (GC_OPTIM_MAXH - 4)
#define GC_OPTIM_SPEC_MAXH GC_OPTIM_BETA2_KIND /* slots before these are the specs' own */

static inline int gc_lr_single(const double *h)
{
    return h[GC_OPTIM_LR_SINGLE] != 0.0;
}

/* 1 - lr * x */
static inline double gc_lr_one_minus_times(const double *h, double lr, double x)
{
    if (gc_lr_single(h)) {
        const float product = (float)lr * (float)x;
        const float result = 1.0f - product;
        return (double)result;
    }
    return 1.0 - lr * x;
}

/* lr / x */
static inline double gc_lr_over(const double *h, double lr, double x)
{
    if (gc_lr_single(h)) {
        const float result = (float)lr / (float)x;
        return (double)result;
    }
    return lr / x;
}

typedef struct {
    gc_dtype dtype; /* float16, float32 or float64 for every operand (complex ones as real pairs) */
    int ndim;
    int nops;
    const ptrdiff_t *shape;
    char *data[GC_OPTIM_MAXOPS];
    const ptrdiff_t *strides[GC_OPTIM_MAXOPS]; /* bytes */
    int fresh;    /* the creatable buffer is new: the kernel initialises it */
    int zero_dim; /* the parameter is 0-d (torch promotes 0-d operands) */
    int pairs;    /* the parameter is complex, its operands viewed as real pairs (ops that torch
                     runs on the complex tensor itself round differently, e.g. add(alpha=)) */
    const gc_optim_options *options;
    double derived[GC_OPTIM_MAXDERIVED]; /* from the spec's prepare, e.g. the step count */
    /* Set by the driver (gc_optim.c) for each run it passes to a kernel, on its own copy of the
     * item: how the item is visited and where the run starts (the index of its first element
     * in visiting order). For the kernels' model of torch's loops (torch_vector_end). */
    const gc_torch_dims *dims;
    ptrdiff_t run_start;
    /* Per-unit clip factors (AGC through the fused step), or NULL: the item's elements, in
     * visiting order, are `units` runs of equal length; run u's gradient is scaled by
     * unit_factors[units + u] as options->scaling.scale would scale it if unit_factors[u] is
     * nonzero, and left alone if it is 0. Set only where units are consecutive in visiting
     * order (a C-contiguous item). */
    const double *unit_factors;
    ptrdiff_t units;
} gc_optim_item;

/* In an item's gc_torch_dims (see gc_layout.h), the slot of a temporary torch would allocate
 * from the gradient (-grad, grad.add(p)): contiguous in the gradient's own order of dims. */
#define GC_OPTIM_GRAD_TMP_OP GC_MAXOPS

/* Operand sets of torch operations, for gc_optim_torch_vector_end: bit k is operand k, this bit
 * the gradient temporary. */
#define GC_OPTIM_GRAD_TMP (1u << GC_OPTIM_GRAD_TMP_OP)

/* How many of the n elements of item `it`'s current run torch's vectorised CPU loop computes
 * for one operation over the operand set `ops`, whose scalar loop takes the last
 * row % `tail` elements of each row (see torch_vector_end in gc_optim_tmpl.h). */
ptrdiff_t gc_optim_torch_vector_end(const gc_optim_item *it, unsigned ops, ptrdiff_t n, ptrdiff_t tail);

typedef struct {
    const char *name;
    /* The group tuple: operand lists, then per-parameter scalar lists, then hyper-parameters. */
    const char *const *operands; /* params and grads first, then state buffers */
    int max_ops;
    const char *const *scalars; /* lists of writable 0-d float32 arrays, one per parameter */
    int nscalars;
    const char *const *hparams; /* a leading '?' marks a flag (any object, by truth) */
    int nh;
    int (*nops)(const double *h); /* operands in use for these hyper-parameters */
    unsigned written;             /* bit k: operand k is written */
    int creatable;                /* operand whose None entries become new buffers, or -1 */
    int complex_ok;               /* complex parameters, viewed as real pairs as torch does */
    /* Once per parameter, after validation and before any element is updated: advance its
     * scalars (in place, float32 as torch's tensors) and fill item->derived. May be NULL. */
    void (*prepare)(gc_optim_item *item, float *const *scalars, const double *h);
} gc_optim_spec;

extern const gc_optim_spec gc_optim_specs[GC_OPTIM_COUNT];

/* Runs optimizer `which` over every item (several threads on large inputs, when no two items
 * share memory). */
void gc_optim_run(int which, const gc_optim_item *items, size_t n);

typedef struct {
    gc_run_fn walk[GC_OPTIM_COUNT]; /* ctx: the gc_optim_item */
} gc_optim_table;

/* The loops in use, set by gc_select_isa (gc_kernels.h). */
extern gc_optim_table gc_optim_kernels;
void gc_fill_optim_table_base(gc_optim_table *table);
void gc_fill_optim_table_avx2(gc_optim_table *table);
void gc_fill_optim_table_avx512(gc_optim_table *table);

#endif /* GC_OPTIM_H */
