/* The optimizer table: for each optimizer, the layout of its group tuple and what happens once
 * per parameter before its elements are updated. See gc_optim.h. */
#include "gc_optim.h"

#include <math.h>

#include "gc_optim_adadelta.h"
#include "gc_optim_adagrad.h"
#include "gc_optim_adam.h"
#include "gc_optim_adamax.h"
#include "gc_optim_asgd.h"
#include "gc_optim_average.h"
#include "gc_optim_nadam.h"
#include "gc_optim_radam.h"
#include "gc_optim_rmsprop.h"
#include "gc_optim_rprop.h"
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

/* 1 - beta ** step and, with `root`, its square root, as torch's Python computes them: with a
 * float beta in Python floats (pow, and ** 0.5 a pow too); with a Tensor beta (bits 32 or 64)
 * as 0-d tensors of its dtype, whose ** special-cases exponents 2 and 3 as products and 0.5 as
 * sqrt, and otherwise calls std::pow(base, double), in double for a float32 base too, then
 * rounds. */
static double one_minus_power(double beta, int bits, double step, int root)
{
    if (bits == 32) {
        const float b = (float)beta;
        const float power = step == 2.0 ? b * b : step == 3.0 ? b * b * b : (float)pow((double)b, step);
        const float r = 1.0f - power;
        return root ? (double)sqrtf(r) : (double)r;
    }
    if (bits == 64) {
        const double power = step == 2.0 ? beta * beta : step == 3.0 ? beta * beta * beta : pow(beta, step);
        return root ? sqrt(1.0 - power) : 1.0 - power;
    }
    const double r = 1.0 - pow(beta, step);
    return root ? pow(r, 0.5) : r;
}

static void adam_prepare(gc_optim_item *item, float *const *scalars, const double *h)
{
    *scalars[0] += 1.0f; /* torch's step tensor is float32 */
    const double step = (double)*scalars[0];
    item->derived[ADAM_STEP] = step;
    item->derived[ADAM_BC1] = one_minus_power(h[ADAM_BETA1], (int)h[GC_OPTIM_BETA1_KIND], step, 0);
    item->derived[ADAM_BC2_SQRT] = one_minus_power(h[ADAM_BETA2], (int)h[GC_OPTIM_BETA2_KIND], step, 1);
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
    item->derived[ADAGRAD_CLR] = gc_lr_over(h, h[ADAGRAD_LR], 1.0 + (step - 1.0) * h[ADAGRAD_LR_DECAY]);
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
    item->derived[ADAMAX_CLR] = gc_lr_over(h, h[ADAMAX_LR], bias_correction);
}

/* ---- NAdam -------------------------------------------------------------------------------- */

static const char *const nadam_operands[] = {"params", "grads", "exp_avgs", "exp_avg_sqs"};
static const char *const nadam_scalars[] = {"state_steps", "mu_products"};
static const char *const nadam_hparams[NADAM_NH] = {"beta1", "beta2", "lr", "weight_decay", "momentum_decay",
                                                    "eps", "?decoupled_weight_decay", "?maximize"};

static int four_operands(const double *h)
{
    (void)h;
    return 4;
}

/* torch's Python, in its order: step and mu_product are float32 tensors, the rest Python floats
 * (float64, the C library's pow as Python's **); mu_product *= mu rounds mu to float32 first. */
static void nadam_prepare(gc_optim_item *item, float *const *scalars, const double *h)
{
    *scalars[0] += 1.0f;
    const double step = (double)*scalars[0], beta1 = h[NADAM_BETA1], lr = h[NADAM_LR];
    const double mu = beta1 * (1.0 - 0.5 * pow(0.96, step * h[NADAM_MOMENTUM_DECAY]));
    const double mu_next = beta1 * (1.0 - 0.5 * pow(0.96, (step + 1.0) * h[NADAM_MOMENTUM_DECAY]));
    *scalars[1] = *scalars[1] * (float)mu;
    const double mu_product = (double)*scalars[1];
    const double mu_product_next = mu_product * mu_next;
    item->derived[NADAM_BC2] = 1.0 - pow(h[NADAM_BETA2], step);
    if (gc_lr_single(h)) {
        /* (-lr * (1 - mu)) / (1 - mu_product), each operation in float32 (see gc_optim.h) */
        const float grad_value = (-(float)lr * (float)(1.0 - mu)) / (float)(1.0 - mu_product);
        const float avg_value = (-(float)lr * (float)mu_next) / (float)(1.0 - mu_product_next);
        item->derived[NADAM_GRAD_VALUE] = (double)grad_value;
        item->derived[NADAM_AVG_VALUE] = (double)avg_value;
    }
    else {
        item->derived[NADAM_GRAD_VALUE] = -lr * (1.0 - mu) / (1.0 - mu_product);
        item->derived[NADAM_AVG_VALUE] = -lr * mu_next / (1.0 - mu_product_next);
    }
}

/* ---- RAdam -------------------------------------------------------------------------------- */

static const char *const radam_operands[] = {"params", "grads", "exp_avgs", "exp_avg_sqs"};
static const char *const radam_scalars[] = {"state_steps"};
static const char *const radam_hparams[RADAM_NH] = {"beta1", "beta2", "lr", "weight_decay", "eps",
                                                    "?decoupled_weight_decay", "?maximize"};

/* The rectification as torch's Python computes it, per parameter from its float32 step. */
static void radam_prepare(gc_optim_item *item, float *const *scalars, const double *h)
{
    *scalars[0] += 1.0f;
    const double step = (double)*scalars[0], beta2 = h[RADAM_BETA2];
    const double bc2 = 1.0 - pow(beta2, step);
    const double rho_inf = 2.0 / (1.0 - beta2) - 1.0;
    const double rho_t = rho_inf - 2.0 * step * pow(beta2, step) / bc2;
    item->derived[RADAM_BC1] = 1.0 - pow(h[RADAM_BETA1], step);
    item->derived[RADAM_BC2_SQRT] = pow(bc2, 0.5);
    item->derived[RADAM_RECTIFY] = rho_t > 5.0;
    item->derived[RADAM_RECT] =
        rho_t > 5.0 ? pow((rho_t - 4.0) * (rho_t - 2.0) * rho_inf / ((rho_inf - 4.0) * (rho_inf - 2.0) * rho_t), 0.5)
                    : 1.0;
}

/* ---- ASGD --------------------------------------------------------------------------------- */

static const char *const asgd_operands[] = {"params", "grads", "axs"};
static const char *const asgd_scalars[] = {"state_steps", "etas", "mus"};
static const char *const asgd_hparams[ASGD_NH] = {"lambd", "lr", "t0", "alpha", "weight_decay", "?maximize"};

static int three_operands(const double *h)
{
    (void)h;
    return 3;
}

/* lr / (1 + lambd * lr * step) ** alpha with a float32 lr: every operation a float32 tensor
 * operation, and ** is torch's pow(tensor, exponent): its special cases, else powf. */
static float asgd_eta_single(float lr, float lambd, float step, double alpha)
{
    const float t = lambd * lr;
    const float u = t * step;
    const float base = 1.0f + u;
    float p;
    if (alpha == 2.0)
        p = base * base;
    else if (alpha == 3.0)
        p = base * base * base;
    else if (alpha == -2.0)
        p = 1.0f / (base * base);
    else if (alpha == 0.5)
        p = sqrtf(base);
    else if (alpha == -0.5)
        p = 1.0f / sqrtf(base);
    else if (alpha == -1.0)
        p = 1.0f / base;
    else
        p = powf(base, (float)alpha);
    return lr / p;
}

/* This step uses eta and mu as stored (float32); then torch stores the next ones, computed from
 * Python floats: eta = lr / (1 + lambd * lr * step) ** alpha, mu = 1 / max(1, step - t0) (with a
 * float32 lr, eta in float32 operations). */
static void asgd_prepare(gc_optim_item *item, float *const *scalars, const double *h)
{
    *scalars[0] += 1.0f;
    const double eta = (double)*scalars[1], mu = (double)*scalars[2];
    item->derived[ASGD_DECAY] = 1.0 - h[ASGD_LAMBD] * eta;
    item->derived[ASGD_NEG_ETA] = -eta;
    item->derived[ASGD_MU] = mu;
    item->derived[ASGD_AVERAGE] = mu != 1.0;
    const double step = (double)*scalars[0], lr = h[ASGD_LR], beyond = step - h[ASGD_T0];
    if (gc_lr_single(h))
        *scalars[1] = asgd_eta_single((float)lr, (float)h[ASGD_LAMBD], (float)step, h[ASGD_ALPHA]);
    else
        *scalars[1] = (float)(lr / pow(1.0 + h[ASGD_LAMBD] * lr * step, h[ASGD_ALPHA]));
    *scalars[2] = (float)(beyond > 1.0 ? 1.0 / beyond : 1.0); /* Python's max(1, x) is 1 for NaN */
}

/* ---- Rprop -------------------------------------------------------------------------------- */

static const char *const rprop_operands[] = {"params", "grads", "prevs", "step_sizes"};
static const char *const rprop_scalars[] = {"state_steps"};
static const char *const rprop_hparams[RPROP_NH] = {"etaminus", "etaplus", "step_size_min", "step_size_max",
                                                    "?maximize"};

static void step_prepare(gc_optim_item *item, float *const *scalars, const double *h)
{
    (void)item;
    (void)h;
    *scalars[0] += 1.0f;
}

/* ------------------------------------------------------------------------------------------- */

/* Every spec's hyper-parameters leave the last slots of gc_optim_options free (gc_optim.h). */
_Static_assert(SGD_NH <= GC_OPTIM_SPEC_MAXH && ADAM_NH <= GC_OPTIM_SPEC_MAXH && AVERAGE_NH <= GC_OPTIM_SPEC_MAXH &&
                   ADAGRAD_NH <= GC_OPTIM_SPEC_MAXH && RMSPROP_NH <= GC_OPTIM_SPEC_MAXH &&
                   ADADELTA_NH <= GC_OPTIM_SPEC_MAXH && ADAMAX_NH <= GC_OPTIM_SPEC_MAXH &&
                   NADAM_NH <= GC_OPTIM_SPEC_MAXH && RADAM_NH <= GC_OPTIM_SPEC_MAXH && ASGD_NH <= GC_OPTIM_SPEC_MAXH &&
                   RPROP_NH <= GC_OPTIM_SPEC_MAXH,
               "a spec's hyper-parameters overlap the shared slots");

const gc_optim_spec gc_optim_specs[GC_OPTIM_COUNT] = {
    [GC_OPTIM_sgd] = {.name = "sgd",
                      .operands = sgd_operands,
                      .max_ops = 3,
                      .hparams = sgd_hparams,
                      .nh = SGD_NH,
                      .nops = sgd_nops,
                      .written = 1u | 4u,
                      .creatable = 2,
                      .complex_ok = 1},
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
                       .complex_ok = 1,
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
    [GC_OPTIM_nadam] = {.name = "nadam",
                        .operands = nadam_operands,
                        .max_ops = 4,
                        .scalars = nadam_scalars,
                        .nscalars = 2,
                        .hparams = nadam_hparams,
                        .nh = NADAM_NH,
                        .nops = four_operands,
                        .written = 1u | 4u | 8u,
                        .creatable = -1,
                        .complex_ok = 1,
                        .prepare = nadam_prepare},
    [GC_OPTIM_radam] = {.name = "radam",
                        .operands = radam_operands,
                        .max_ops = 4,
                        .scalars = radam_scalars,
                        .nscalars = 1,
                        .hparams = radam_hparams,
                        .nh = RADAM_NH,
                        .nops = four_operands,
                        .written = 1u | 4u | 8u,
                        .creatable = -1,
                        .complex_ok = 1,
                        .prepare = radam_prepare},
    [GC_OPTIM_asgd] = {.name = "asgd",
                       .operands = asgd_operands,
                       .max_ops = 3,
                       .scalars = asgd_scalars,
                       .nscalars = 3,
                       .hparams = asgd_hparams,
                       .nh = ASGD_NH,
                       .nops = three_operands,
                       .written = 1u | 4u,
                       .creatable = -1,
                       .complex_ok = 1,
                       .prepare = asgd_prepare},
    [GC_OPTIM_rprop] = {.name = "rprop",
                        .operands = rprop_operands,
                        .max_ops = 4,
                        .scalars = rprop_scalars,
                        .nscalars = 1,
                        .hparams = rprop_hparams,
                        .nh = RPROP_NH,
                        .nops = four_operands,
                        .written = 1u | 4u | 8u,
                        .creatable = -1,
                        .complex_ok = 1,
                        .prepare = step_prepare},
};
