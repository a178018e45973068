/* Optimizer steps over a list of parameters: torch's single-tensor SGD and Adam/AdamW rules.
 * Plain C, no Python. Every arithmetic step rounds as torch's CPU kernels round it (see
 * gc_optim_tmpl.h), so results match torch bit for bit except where torch's sqrt (MKL) is
 * not correctly rounded.
 *
 * The caller has validated every operand (dtype, shape, writeability, no aliasing between a
 * parameter's operands); these functions cannot fail.
 */
#ifndef GC_OPTIM_H
#define GC_OPTIM_H

#include <stddef.h>

#include "gc_kernels.h"

/* Operand slots of one parameter. */
enum { GC_OP_PARAM = 0, GC_OP_GRAD = 1, GC_OP_STATE0 = 2 };
#define GC_OPTIM_MAXOPS 5

typedef struct {
    gc_dtype dtype; /* float16, float32 or float64, the same for every operand */
    int ndim;
    int nops;
    const ptrdiff_t *shape;
    char *data[GC_OPTIM_MAXOPS];
    const ptrdiff_t *strides[GC_OPTIM_MAXOPS]; /* bytes */
    int fresh;           /* SGD: the momentum buffer is new; initialise it from the gradient */
    double step;         /* Adam: this parameter's step count, already incremented */
    const void *options; /* its group's gc_sgd_options or gc_adam_options */
} gc_optim_item;

/* Shared by both optimizers: an optional clip coefficient applied to the gradient first,
 * rounded as clip_grad_norm_ rounds it, and optionally stored back into the gradient. */
typedef struct {
    int has_scale;
    double scale;
    int write_back;
} gc_grad_scaling;

/* A group's hyper-parameters. `scaling` comes first in both: it is shared by the whole call. */
typedef struct {
    gc_grad_scaling scaling;
    double lr, momentum, dampening, weight_decay;
    int nesterov, maximize;
} gc_sgd_options;

typedef struct {
    gc_grad_scaling scaling;
    double lr, beta1, beta2, eps, weight_decay;
    int amsgrad, maximize, decoupled_weight_decay;
} gc_adam_options;

/* Operands: param, grad, momentum buffer (only when momentum != 0); options: gc_sgd_options. */
void gc_sgd(const gc_optim_item *items, size_t n);

/* Operands: param, grad, exp_avg, exp_avg_sq, max_exp_avg_sq (only with amsgrad); options:
 * gc_adam_options. */
void gc_adam(const gc_optim_item *items, size_t n);

typedef struct {
    void (*sgd_walk)(void *ctx, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n);
    void (*adam_walk)(void *ctx, char *const *ptrs, const ptrdiff_t *strides, ptrdiff_t n);
} gc_optim_table;

/* The loops in use, set by gc_select_isa (gc_kernels.h). */
extern gc_optim_table gc_optim_kernels;
void gc_fill_optim_table_base(gc_optim_table *table);
void gc_fill_optim_table_avx2(gc_optim_table *table);

#endif /* GC_OPTIM_H */
