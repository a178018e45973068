"""The arithmetic of one optimizer step: torch's single-tensor SGD and Adam rules, in C.

This module is the kernel boundary. Everything an optimizer computes per element happens in
one C call per parameter group (``gradclip._C.sgd_step`` / ``adam_step``, which validate every
array again and release the GIL on large inputs); the classes in :mod:`gradclip.optim` only
decide which arrays take part (groups, state, gradients).

How torch rounds, and how the kernels reproduce it
--------------------------------------------------
Each torch operation rounds once to the tensor's dtype, with its Python-float scalars first
converted to that dtype (float16 tensors: scalars go to float32 and the operation runs in
float32, then rounds to float16; ``add``'s alpha is rounded to float16 first). Three
operations are *fused multiply-adds* in torch's CPU kernels (``vec::fmadd`` in the vectorised
loop; the scalar loop is contracted to an FMA by the compiler):

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

from typing import Optional

import numpy as np

from .. import _C

__all__ = ["adam", "sgd"]


def sgd(
    params: list[np.ndarray],
    grads: list[np.ndarray],
    momentum_buffers: list[Optional[np.ndarray]],
    *,
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    grad_scale: Optional[float] = None,
    write_back: bool = True,
) -> None:
    """Apply one SGD step in place, as ``torch.optim._single_tensor_sgd``.

    Parameters
    ----------
    params : list of numpy.ndarray
        The parameters, updated in place. Any memory layout; all must be writable.
    grads : list of numpy.ndarray
        ``grads[i]`` has the shape and dtype of ``params[i]``. Read only, unless
        ``grad_scale`` is given with ``write_back``.
    momentum_buffers : list of numpy.ndarray or None
        One entry per parameter when ``momentum != 0`` (ignored otherwise). An array is
        updated in place; ``None`` means "first step": the buffer is created as a copy of the
        modified gradient (undampened, as torch does) and stored into this list so the caller
        can save it in the optimizer state.
    lr, momentum, dampening, weight_decay : float
        The group's hyper-parameters.
    nesterov, maximize : bool
        As in torch.
    grad_scale : float, optional
        A clipping coefficient: the step uses ``grads[i] * grad_scale`` rounded to the
        gradient's dtype, exactly what ``clip_grad_norm_`` leaves in the gradient.
    write_back : bool, default True
        With ``grad_scale``, also store the clipped gradient into ``grads[i]``.

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
    """
    _C.sgd_step(
        params, grads, momentum_buffers, lr, momentum, dampening, weight_decay,
        nesterov, maximize, grad_scale, write_back,
    )


def adam(
    params: list[np.ndarray],
    grads: list[np.ndarray],
    exp_avgs: list[np.ndarray],
    exp_avg_sqs: list[np.ndarray],
    max_exp_avg_sqs: list[np.ndarray],
    state_steps: list[np.ndarray],
    *,
    amsgrad: bool,
    beta1: float,
    beta2: float,
    lr: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
    decoupled_weight_decay: bool,
    grad_scale: Optional[float] = None,
    write_back: bool = True,
) -> None:
    """Apply one Adam/AdamW step in place, as ``torch.optim._single_tensor_adam``.

    Parameters
    ----------
    params : list of numpy.ndarray
        The parameters, updated in place. Any memory layout; all must be writable.
    grads : list of numpy.ndarray
        ``grads[i]`` has the shape and dtype of ``params[i]``. Read only, unless
        ``grad_scale`` is given with ``write_back``.
    exp_avgs, exp_avg_sqs : list of numpy.ndarray
        First and second moment estimates, one per parameter (zeros before the first step),
        updated in place.
    max_exp_avg_sqs : list of numpy.ndarray
        With ``amsgrad``, the running maxima of ``exp_avg_sqs`` (zeros initially), updated in
        place; ignored (may be empty) otherwise.
    state_steps : list of numpy.ndarray
        The step counters, 0-d float32 arrays (torch's float32 ``step`` tensor); each is
        incremented in place (in float32) before it is used.
    amsgrad, maximize, decoupled_weight_decay : bool
        As in torch (``decoupled_weight_decay=True`` is AdamW).
    beta1, beta2, lr, weight_decay, eps : float
        The group's hyper-parameters.
    grad_scale : float, optional
        A clipping coefficient; see :func:`sgd`.
    write_back : bool, default True
        With ``grad_scale``, store the clipped gradients into ``grads``.

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
    """
    _C.adam_step(
        params, grads, exp_avgs, exp_avg_sqs, max_exp_avg_sqs if amsgrad else [], state_steps,
        amsgrad, beta1, beta2, lr, weight_decay, eps, maximize, decoupled_weight_decay,
        grad_scale, write_back,
    )
