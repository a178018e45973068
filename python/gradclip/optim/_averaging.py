"""The arithmetic of weight averaging (:mod:`gradclip.optim.swa_utils`): two in-place updates
of a list of averaged arrays from a list of current ones, each as torch computes it on CPU.

* :func:`lerp_` is ``torch._foreach_lerp_(averaged, current, weight)`` with a Python-float
  weight (torch's EMA and ``get_swa_multi_avg_fn`` updates): per element, with ``w`` the
  weight rounded to the compute type (float32 for float16 and float32 arrays),
  ``fma(w, c - a, a)`` if ``|w| < 0.5`` else ``fma(w - 1, c - a, c)``, rounded to the dtype.
* :func:`mean_` is ``a + (c - a) / count`` with every operation rounded to the dtype
  (float16: the division in float32, then rounded), what ``AveragedModel`` runs on CPU
  (``get_swa_avg_fn`` per tensor).

Both are one C call for the whole list (``_C.average_step``, an entry of the optimizer table in
csrc/gc_optim_specs.c, kernel csrc/gc_optim_average.h): every array is validated before any is
written, any layout, the GIL released on large inputs.
"""

from __future__ import annotations

from typing import Any

from .. import _C

__all__ = ["lerp_", "mean_"]



def lerp_(averaged: list[Any], current: list[Any], weight: float) -> None:
    """``averaged[i] = lerp(averaged[i], current[i], weight)`` in place, as torch's CPU lerp.

    Parameters
    ----------
    averaged, current : list of numpy.ndarray
        Pairwise of one shape and float dtype (any layout); ``averaged`` writable, the two
        not sharing memory.
    weight : float
        The interpolation weight (a Python float, as torch's scalar overload takes it).

    Raises
    ------
    TypeError, ValueError
        An unusable array (raised before anything is modified).
    """
    _C.average_step([(averaged, current, False, weight)], None, False)


def mean_(averaged: list[Any], current: list[Any], count: int) -> None:
    """``averaged[i] += (current[i] - averaged[i]) / count`` in place, rounded as torch.

    Parameters
    ----------
    averaged, current : list of numpy.ndarray
        As for :func:`lerp_`.
    count : int
        The divisor (``n_averaged + 1``).

    Raises
    ------
    TypeError, ValueError
        An unusable array (raised before anything is modified).
    """
    _C.average_step([(averaged, current, True, count)], None, False)
