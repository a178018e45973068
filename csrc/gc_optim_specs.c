/* The optimizer table: for each optimizer, the layout of its group tuple and what happens once
 * per parameter before its elements are updated. See gc_optim.h. */
#include "gc_optim.h"

#include "gc_optim_adam.h"
#include "gc_optim_average.h"
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
};
