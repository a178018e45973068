/* The optimizer table: for each optimizer, the layout of its group tuple and what happens once
 * per parameter before its elements are updated. See gc_optim.h. */
#include "gc_optim.h"

#include <math.h>

#include "gc_optim_adadelta.h"
#include "gc_optim_adagrad.h"
#include "gc_optim_adam.h"
#include "gc_optim_adamax.h"
#include "gc_optim_average.h"
#include "gc_optim_rmsprop.h"
#include "gc_optim_sgd.h"

/* ---- SGD ---------------------------------------------------------------------------------- */

static const char *const sgd_operands[] = {"params", "grads", "momentum_buffers"};
static const char *const sgd_hparams[SGD_NH] = {"lr", "momentum", "dampening", "weight_decay", "?nesterov",
                                                "?maximize"};

static int sgd_nops(const double *h)
{
    return h[SGD_MOMENTUM] != 0.0 ? 3 : 2;
}

/* ---- Adam / AdamW ------------------------------------------------------------------------- */

static const char *const adam_operands[] = {"params", "grads", "exp_avgs", "exp_avg_sqs", "max_exp_avg_sqs"};
static const char *const adam_scalars[] = {"state_steps"};
static const char *const adam_hparams[ADAM_NH] = {"?amsgrad", "beta1", "beta2", "lr", "weight_decay",
                                                  "eps", "?maximize", "?decoupled_weight_decay"};

static int adam_nops(const double *h)
{
    return h[ADAM_AMSGRAD] != 0.0 ? 5 : 4;
}

static void adam_prepare(gc_optim_item *item, float *const *scalars, const double *h)
{
    (void)h;
    *scalars[0] += 1.0f; /* torch's step tensor is float32 */
    item->derived[ADAM_STEP] = (double)*scalars[0];
}

/* ---- Weight averaging (swa_utils) -------------------------------------------------------- */

static const char *const average_operands[] = {"averaged", "current"};
static const char *const average_hparams[AVERAGE_NH] = {"?mean", "weight"};

static int average_nops(const double *h)
{
    (void)h;
    return 2;
}

/* ---- Adagrad ------------------------------------------------------------------------------ */

static const char *const adagrad_operands[] = {"params", "grads", "state_sums"};
static const char *const step_scalars[] = {"state_steps"};
static const char *const adagrad_hparams[ADAGRAD_NH] = {"lr", "weight_decay", "lr_decay", "eps", "?maximize"};

static int adagrad_nops(const double *h)
{
    (void)h;
    return 3;
}

static void adagrad_prepare(gc_optim_item *item, float *const *scalars, const double *h)
{
    *scalars[0] += 1.0f;
    const double step = (double)*scalars[0];
    item->derived[ADAGRAD_CLR] = h[ADAGRAD_LR] / (1.0 + (step - 1.0) * h[ADAGRAD_LR_DECAY]);
}

/* ---- RMSprop ------------------------------------------------------------------------------ */

/* Without centered, the momentum buffers take operand 3 (see gc_optim_rmsprop.h). */
static const char *const rmsprop_operands[] = {"params", "grads", "square_avgs", "grad_avgs", "momentum_buffers"};
static const char *const rmsprop_hparams[RMSPROP_NH] = {"lr", "alpha", "eps", "weight_decay", "momentum",
                                                        "?centered", "?maximize"};

static int rmsprop_nops(const double *h)
{
    return 3 + (h[RMSPROP_CENTERED] != 0.0) + (h[RMSPROP_MOMENTUM] > 0.0);
}

/* The step counts of optimizers that only count. */
static void count_step(gc_optim_item *item, float *const *scalars, const double *h)
{
    (void)item;
    (void)h;
    *scalars[0] += 1.0f;
}

/* ---- Adadelta ----------------------------------------------------------------------------- */

static const char *const adadelta_operands[] = {"params", "grads", "square_avgs", "acc_deltas"};
static const char *const adadelta_hparams[ADADELTA_NH] = {"lr", "rho", "eps", "weight_decay", "?maximize"};

static int four_ops(const double *h)
{
    (void)h;
    return 4;
}

/* ---- Adamax ------------------------------------------------------------------------------- */

static const char *const adamax_operands[] = {"params", "grads", "exp_avgs", "exp_infs"};
static const char *const adamax_hparams[ADAMAX_NH] = {"lr", "beta1", "beta2", "eps", "weight_decay", "?maximize"};

static void adamax_prepare(gc_optim_item *item, float *const *scalars, const double *h)
{
    *scalars[0] += 1.0f;
    /* bias_correction = 1 - beta1 ** step; clr = lr / bias_correction (Python floats) */
    const double bias_correction = 1.0 - pow(h[ADAMAX_BETA1], (double)*scalars[0]);
    item->derived[ADAMAX_CLR] = h[ADAMAX_LR] / bias_correction;
}

/* ------------------------------------------------------------------------------------------- */

const gc_optim_spec gc_optim_specs[GC_OPTIM_COUNT] = {
    [GC_OPTIM_sgd] = {.name = "sgd",
                      .operands = sgd_operands,
                      .max_ops = 3,
                      .hparams = sgd_hparams,
                      .nh = SGD_NH,
                      .nops = sgd_nops,
                      .written = 1u | 4u,
                      .creatable = 2},
    [GC_OPTIM_adam] = {.name = "adam",
                       .operands = adam_operands,
                       .max_ops = 5,
                       .scalars = adam_scalars,
                       .nscalars = 1,
                       .hparams = adam_hparams,
                       .nh = ADAM_NH,
                       .nops = adam_nops,
                       .written = 1u | 4u | 8u | 16u,
                       .creatable = -1,
                       .prepare = adam_prepare},
    [GC_OPTIM_average] = {.name = "average",
                          .operands = average_operands,
                          .max_ops = 2,
                          .hparams = average_hparams,
                          .nh = AVERAGE_NH,
                          .nops = average_nops,
                          .written = 1u,
                          .creatable = -1},
    [GC_OPTIM_adagrad] = {.name = "adagrad",
                          .operands = adagrad_operands,
                          .max_ops = 3,
                          .scalars = step_scalars,
                          .nscalars = 1,
                          .hparams = adagrad_hparams,
                          .nh = ADAGRAD_NH,
                          .nops = adagrad_nops,
                          .written = 1u | 4u,
                          .creatable = -1,
                          .complex_ok = 1,
                          .prepare = adagrad_prepare},
    [GC_OPTIM_rmsprop] = {.name = "rmsprop",
                          .operands = rmsprop_operands,
                          .max_ops = 5,
                          .scalars = step_scalars,
                          .nscalars = 1,
                          .hparams = rmsprop_hparams,
                          .nh = RMSPROP_NH,
                          .nops = rmsprop_nops,
                          .written = 1u | 4u | 8u | 16u,
                          .creatable = -1,
                          .complex_ok = 1,
                          .prepare = count_step},
    [GC_OPTIM_adadelta] = {.name = "adadelta",
                           .operands = adadelta_operands,
                           .max_ops = 4,
                           .scalars = step_scalars,
                           .nscalars = 1,
                           .hparams = adadelta_hparams,
                           .nh = ADADELTA_NH,
                           .nops = four_ops,
                           .written = 1u | 4u | 8u,
                           .creatable = -1,
                           .complex_ok = 1,
                           .prepare = count_step},
    [GC_OPTIM_adamax] = {.name = "adamax",
                         .operands = adamax_operands,
                         .max_ops = 4,
                         .scalars = step_scalars,
                         .nscalars = 1,
                         .hparams = adamax_hparams,
                         .nh = ADAMAX_NH,
                         .nops = four_ops,
                         .written = 1u | 4u | 8u,
                         .creatable = -1,
                         .complex_ok = 1,
                         .prepare = adamax_prepare},
};
