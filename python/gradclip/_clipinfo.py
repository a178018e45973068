"""Rich clipping results (:class:`ClipInfo`, :func:`get_norms`) and the non-finite policy.

Everything here comes out of the one reduction the clipping functions make anyway
(``_C.clip_info``): the per-array norms are the values that enter the total, so asking for
them costs no extra pass over gradient memory.
"""

from __future__ import annotations

from typing import NamedTuple, TypeAlias, cast

import numpy as np
import numpy.typing as npt

from . import _C

__all__ = ["ClipInfo", "get_norms"]

#: The non-finite policies, as _C.clip_info numbers them.
_MODES = {"propagate": 0, "raise": 1, "skip": 2, "zero": 3}
_SKIP, _ZERO = _MODES["skip"], _MODES["zero"]


class ClipInfo(NamedTuple):
    """What a clipping call measured and did: a frozen, picklable record.

    A named tuple (cheap to create: ``return_info=True`` must cost next to nothing), compared
    field by field (``norms`` with ``np.array_equal``, NaN equal to NaN).

    Attributes
    ----------
    total_norm : numpy.float32 or numpy.float64
        The total norm before clipping, exactly as the call returns it without
        ``return_info`` (under ``nonfinite="zero"``: of the arrays whose norm is finite).
    clip_coef : float
        The coefficient the gradients were multiplied by: torch's
        ``min(max_norm * (1 / (total_norm + 1e-6)), 1)``, in float32 arithmetic for a float32
        total. ``1.0`` when nothing is scaled (``get_total_norm``, or a skipped step).
    clipped : bool
        ``clip_coef < 1``: the gradients were scaled down.
    norms : numpy.ndarray
        The norm of each array (each gradient taking part, in list order), in the total's
        dtype: the values the total is formed from, non-finite ones included.
    num_nonfinite : int
        How many arrays have a NaN or infinite norm.
    skipped : bool
        ``nonfinite="skip"`` found a non-finite total and modified nothing.
    """

    total_norm: np.floating
    clip_coef: float
    clipped: bool
    norms: np.ndarray
    num_nonfinite: int
    skipped: bool

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ClipInfo):
            return NotImplemented
        # b is the other record's field (mypy types a NamedTuple's items as object); for
        # anything that is not array-like, array_equal returns False.
        return all(
            np.array_equal(a, cast(npt.ArrayLike, b), equal_nan=True) if isinstance(a, np.ndarray) else _same(a, b)
            for a, b in zip(self, other)
        )

    def __ne__(self, other: object) -> bool:
        equal = self.__eq__(other)
        return equal if equal is NotImplemented else not equal


# Unhashable (it holds an ndarray). Set after the class statement: typing.NamedTuple copies a
# class-body attribute onto the named tuple with this same setattr, but mypy accepts no
# assignment in a NamedTuple body, and typeshed types tuple.__hash__ as a method.
setattr(ClipInfo, "__hash__", None)

#: What ``_C.clip_info`` returns: per-array norms, then per group the totals, coefficients
#: and non-finite counts, and whether the step was skipped.
_ClipResult: TypeAlias = tuple[np.ndarray, tuple[np.floating, ...], tuple[float, ...], tuple[int, ...], bool]


def _same(a: object, b: object) -> bool:
    return a == b or (a != a and b != b)  # NaN totals compare equal to themselves


def _mode(nonfinite: str, error_if_nonfinite: bool) -> int:
    """The policy number; ``error_if_nonfinite=True`` means ``"raise"`` and must agree."""
    if not isinstance(nonfinite, str) or nonfinite not in _MODES:
        raise ValueError(
            f"nonfinite must be one of {', '.join(map(repr, _MODES))}, not {nonfinite!r}"
        )
    if error_if_nonfinite:
        if nonfinite not in ("propagate", "raise"):
            raise ValueError(
                f"error_if_nonfinite=True contradicts nonfinite={nonfinite!r}; "
                "pass only one of them (error_if_nonfinite=True is nonfinite='raise')"
            )
        return _MODES["raise"]
    return _MODES[nonfinite]


def _infos(result: _ClipResult, ranges: list[tuple[int, int]] | None = None) -> list[ClipInfo]:
    """ClipInfos from a ``_C.clip_info`` result, one per group (``ranges``: each group's
    slice of the norms)."""
    norms, totals, coefs, counts, skipped = result
    if ranges is None:
        return [ClipInfo(totals[0], coefs[0], coefs[0] < 1.0, norms, counts[0], skipped)]
    return [
        ClipInfo(total, coef, coef < 1.0, norms[a:b], count, skipped)
        for total, coef, count, (a, b) in zip(totals, coefs, counts, ranges)
    ]


def _clip(
    parameters: object,
    max_norm: float,
    norm_type: float,
    error_if_nonfinite: bool,
    return_info: bool,
    nonfinite: str,
) -> np.floating | ClipInfo:
    """``clip_grad_norm_`` with a policy or a rich result (``parameters`` already a sequence)."""
    result = _C.clip_info(
        parameters, True, norm_type, (max_norm,), None, _mode(nonfinite, error_if_nonfinite), 1
    )
    return _infos(result)[0] if return_info else result[1][0]


def _total(
    tensors: object, norm_type: float, error_if_nonfinite: bool, return_info: bool, nonfinite: str
) -> np.floating | ClipInfo:
    """``get_total_norm`` with a policy or a rich result; never modifies anything."""
    result = _C.clip_info(tensors, False, norm_type, None, None, _mode(nonfinite, error_if_nonfinite), 0)
    return _infos(result)[0] if return_info else result[1][0]


def get_norms(tensors: object, norm_type: float | str = 2.0) -> np.ndarray:
    """The norm of each array, as the total norm uses them.

    Parameters
    ----------
    tensors : ndarray or iterable of ndarray
        As for :func:`gradclip.get_total_norm`.
    norm_type : float or {'inf', '-inf'}, default 2.0
        The order of each norm.

    Returns
    -------
    numpy.ndarray
        One norm per array, in list order, in the total's dtype (float32 unless an array is
        float64 or complex128). ``get_total_norm(tensors, p)`` is the p-norm of these values,
        formed exactly as the total is.

    Examples
    --------
    >>> import numpy as np, gradclip
    >>> gradclip.get_norms([np.array([3.0, 4.0]), np.array([1.0])])
    array([5., 1.])
    """
    from ._clip import _as_sequence, _norm_type, _PASS_THROUGH

    if not isinstance(tensors, _PASS_THROUGH):
        tensors = _as_sequence(tensors, name="tensors")
    return _C.clip_info(tensors, False, _norm_type(norm_type), None, None, 0, 0)[0]
