"""The arithmetic of one optimizer step: torch's single-tensor SGD and Adam rules, in C.

This module is the kernel boundary. Everything an optimizer computes per element happens in
one C call per step, for all parameter groups together (``gradclip._C.sgd_step`` /
``adam_step``, which validate every array of every group before changing any, and release the
GIL on large inputs); the classes in :mod:`gradclip.optim` only decide which arrays take part
(groups, state, gradients).

How torch rounds, and how the kernels reproduce it
--------------------------------------------------
Each torch operation rounds once to the tensor's dtype, with its Python-float scalars first
converted to that dtype (float16 tensors: scalars go to float32 and the operation runs in
float32, then rounds to float16; ``add``'s alpha and a scalar added to a tensor, such as
``eps``, are rounded to float16 first). Three operations are *fused multiply-adds* in torch's
CPU kernels (``vec::fmadd`` in the vectorised loop; the scalar loop is contracted to an FMA by
the compiler, except for float16 ``add``, whose scalar loop computes ``a + h(s * b)`` in
float16 arithmetic: the kernels follow which elements torch gives to which loop, see
csrc/gc_optim_tmpl.h):

* ``a.add(b, alpha=s)``            ->  ``fma(b, s, a)``
* ``a.lerp_(b, w)`` (scalar w)      ->  ``fma(w, b - a, a)`` if ``|w| < 0.5``
  else ``fma(w - 1, b - a, b)``
* ``a.addcmul_(b, c, value=s)``     ->  ``fma(s * b, c, a)``

``addcdiv_`` is ``a + (s * b) / c`` with every step rounded, and ``mul_``, ``/``, ``sqrt``
are single IEEE operations. The C kernels call ``fma``/``fmaf`` explicitly (one rounding on
every CPU; the build forbids implicit contraction), so SGD matches torch bit for bit. For Adam
the one remaining difference is ``sqrt``: torch's CPU ``sqrt`` (MKL VML on x86 builds) is not
correctly rounded (about 17 % of float32 and 1 % of float64 results are 1 ulp off), whereas
the C library's is.
"""

from __future__ import annotations

from typing import Any, NamedTuple, Optional

import numpy as np

from .. import _C

__all__ = ["AdamGroup", "SGDGroup", "adam", "sgd"]


class SGDGroup(NamedTuple):
    """One parameter group's share of an SGD step.

    ``params``/``grads``: lists of ndarrays, pairwise of one shape and dtype (any layout).
    ``momentum_buffers``: one entry per parameter when ``momentum != 0`` (ignored otherwise);
    an array is updated in place, ``None`` means "first step": the buffer is created as a copy
    of the modified gradient (undampened, as torch does) and stored into this list so the
    caller can save it in the optimizer state.
    """

    params: list[Any]
    grads: list[Any]
    momentum_buffers: list[Any]
    lr: float
    momentum: float
    dampening: float
    weight_decay: float
    nesterov: bool
    maximize: bool


class AdamGroup(NamedTuple):
    """One parameter group's share of an Adam/AdamW step.

    ``exp_avgs``/``exp_avg_sqs`` (and ``max_exp_avg_sqs`` with amsgrad, else ignored): state
    arrays, zeros before the first step, updated in place. ``state_steps``: 0-d float32 arrays
    (torch's float32 ``step`` tensor), incremented in place before use.
    ``decoupled_weight_decay=True`` is AdamW.
    """

    params: list[Any]
    grads: list[Any]
    exp_avgs: list[Any]
    exp_avg_sqs: list[Any]
    max_exp_avg_sqs: list[Any]
    state_steps: list[Any]
    amsgrad: bool
    beta1: float
    beta2: float
    lr: float
    weight_decay: float
    eps: float
    maximize: bool
    decoupled_weight_decay: bool


def sgd(groups: list[SGDGroup], *, grad_scale: Optional[float] = None, write_back: bool = True) -> int:
    """Apply one SGD step to every group in place, as ``torch.optim._single_tensor_sgd``.

    Parameters
    ----------
    groups : list of SGDGroup
        The arrays and hyper-parameters of each parameter group.
    grad_scale : float, optional
        A clipping coefficient: the step uses ``grad * grad_scale`` rounded to the gradient's
        dtype, exactly what ``clip_grad_norm_`` leaves in the gradient.
    write_back : bool, default True
        With ``grad_scale``, also store the clipped gradients into the gradient arrays.

    Returns
    -------
    int
        How many momentum buffers were created (``None`` entries replaced).

    Notes
    -----
    Per element, with ``fma`` rounding once and every other operation rounding to the
    parameter dtype::

        g = -g if maximize
        g = fma(p, weight_decay, g)                        if weight_decay != 0
        b = copy(g)                                        first step, momentum != 0
        b = fma(g, 1 - dampening, b * momentum)            later steps
        g = fma(b, momentum, g) if nesterov else b         momentum != 0
        p = fma(g, -lr, p)

    Complex parameters: torch updates them with complex arithmetic, where ``a + s * b`` is the
    complex product ``b * (s + 0i)`` rounded, then the sum rounded; every ``fma`` above is then
    those two roundings on each real component (bit-identical to torch).
    """
    return _C.sgd_step(groups, grad_scale, write_back)


def adam(groups: list[AdamGroup], *, grad_scale: Optional[float] = None, write_back: bool = True) -> None:
    """Apply one Adam/AdamW step to every group in place, as ``torch.optim._single_tensor_adam``.

    Parameters
    ----------
    groups : list of AdamGroup
        The arrays, state and hyper-parameters of each parameter group.
    grad_scale : float, optional
        A clipping coefficient; see :func:`sgd`.
    write_back : bool, default True
        With ``grad_scale``, store the clipped gradients into the gradient arrays.

    Notes
    -----
    Per parameter, bias corrections are float64 as in torch's Python
    (``bc1 = 1 - beta1 ** step``, ``bc2 = 1 - beta2 ** step``, ``step_size = lr / bc1``,
    ``bc2_sqrt = bc2 ** 0.5``); per element, rounding to the parameter dtype after each
    operation::

        g = -g if maximize
        p = p * (1 - lr * weight_decay)                    decoupled, weight_decay != 0
        g = fma(p, weight_decay, g)                        coupled, weight_decay != 0
        m = lerp(m, g, 1 - beta1)                          (an fma, see module notes)
        v = fma((1 - beta2) * g, g, v * beta2)
        vmax = max(vmax, v)                                amsgrad (NaN propagates)
        d = sqrt(vmax if amsgrad else v) / bc2_sqrt + eps
        p = p + (-step_size * m) / d

    Complex parameters are updated as real pairs (torch's ``view_as_real``), except the
    coupled weight decay, which torch applies before that view as a complex add: two
    roundings instead of the ``fma``.
    """
    _C.adam_step(groups, grad_scale, write_back)
