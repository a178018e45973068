"""Data-parallel and sharded training over MPI: clipping with one result on every rank.

Built on `mpi4py <https://mpi4py.readthedocs.io>`_ (``pip install "gradclip[mpi]"`` brings
mpi4py and MPICH's wheels); ``import gradclip`` never imports it. Every function takes the
communicator as ``comm=`` (an ``mpi4py.MPI.Comm``, usually ``MPI.COMM_WORLD``) and must be
called by every rank of it, in the same order, as any MPI collective::

    from mpi4py import MPI
    import gradclip.distributed as dist

    comm = MPI.COMM_WORLD
    dist.broadcast_parameters_(params, comm=comm)           # all ranks start equal
    ...
    dist.allreduce_grads_(params, comm=comm)                # average the gradients
    gradclip.clip_grad_norm_(params, 1.0)                    # now identical on every rank
    optimizer.step()

The results are the same on every rank, bit for bit, and do not depend on how MPI
implements its collectives: every reduction is gathered and combined in rank order by
gradclip (see each function's Notes). Before moving any data, every call makes one small
collective in which the ranks compare what they are about to do (the number, dtypes and
shapes of the arrays where they must agree, and the arguments), and report any local error;
a rank that differs, or fails, makes every rank raise the same exception instead of leaving
some of them waiting in a collective.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any, NoReturn, Optional, Sequence, TypeAlias

import numpy as np

try:
    # An optional dependency, absent from the type checkers' environment (as matplotlib).
    from mpi4py import MPI  # pyright: ignore[reportMissingImports]
except ImportError as exc:  # pragma: no cover - exercised only without mpi4py
    raise ImportError(
        "gradclip.distributed needs mpi4py and an MPI library: "
        'pip install "gradclip[mpi]" (mpi4py and MPICH wheels)'
    ) from exc

from . import _C, _clip
from ._parameter import Parameter

if TYPE_CHECKING:
    from .optim.optimizer import Optimizer, _Batch

#: What a total's ``collect`` returns: this rank's arrays and their names for error messages.
_Collected: TypeAlias = tuple[list[np.ndarray], Optional[Sequence[str]]]

__all__ = [
    "DEFAULT_BUCKET_BYTES",
    "allreduce_grads_",
    "broadcast_optimizer_state_",
    "broadcast_parameters_",
    "clip_grad_norm_",
    "get_total_norm",
]

#: Bucket size of :func:`allreduce_grads_` and the broadcasts (torch DDP's 25 MiB).
DEFAULT_BUCKET_BYTES = 25 * 2**20

_REDUCIBLE = tuple(np.dtype(t) for t in (np.float16, np.float32, np.float64, np.complex64, np.complex128))
_NO_ARRAYS = np.empty(0, np.float64)
# Exceptions re-raised by type on the ranks that did not fail themselves.
_BUILTIN_ERRORS = {
    cls.__name__: cls
    for cls in (TypeError, ValueError, RuntimeError, OverflowError, IndexError, KeyError,
                AttributeError, MemoryError, NotImplementedError)
}
_NAME_PREFIX = re.compile(r"^\w+\[(\d+)\](\.grad)?")


# ---------------------------------------------------------------------------------------------
# Agreement: one small collective before any data moves


def _check_comm(comm: object) -> None:
    if not isinstance(comm, MPI.Comm):
        raise TypeError(f"comm must be an mpi4py.MPI.Comm, not {type(comm).__name__}")


def _signature(arrays: Sequence[np.ndarray], shapes: bool) -> int:
    codes: list[int] = []
    for a in arrays:
        codes.append(ord(a.dtype.char))
        if shapes:
            codes.append(a.ndim)
            codes.extend(a.shape)
    return zlib.crc32(np.array(codes, np.int64).tobytes())


def _describe(a: np.ndarray, shapes: bool) -> str:
    return f"{a.dtype} {a.shape}" if shapes else str(a.dtype)


def _agree(
    comm: Any,
    where: str,
    error: Optional[BaseException],
    arrays: Sequence[np.ndarray],
    args: tuple[Any, ...],
    *,
    single: bool = True,
    what: str = "array",
    match: Optional[str] = None,
) -> np.ndarray:
    """Allgather of five int64 per rank: (failed, count, single, args crc, signature crc).

    ``match``: None (counts may differ), ``"dtype"`` (same count and dtypes on every rank)
    or ``"shape"`` (same count, dtypes and shapes). Raises the same exception on every rank
    if any rank failed locally or the ranks disagree; returns the table otherwise.
    """
    header = np.zeros(5, np.int64)
    if error is None:
        header[1] = len(arrays)
        header[2] = bool(single)
        header[3] = zlib.crc32(repr(args).encode())
        if match is not None:
            header[4] = _signature(arrays, match == "shape")
    else:
        header[0] = 1
    table = np.empty((comm.Get_size(), 5), np.int64)
    comm.Allgather(header, table)
    failed = table[:, 0].any()
    same_args = (table[:, 3] == table[0, 3]).all()
    same_arrays = match is None or ((table[:, 1] == table[0, 1]).all() and (table[:, 4] == table[0, 4]).all())
    if failed or not (same_args and same_arrays):
        _raise_together(comm, where, error, arrays, args, what, match)
    return table


def _raise_together(
    comm: Any,
    where: str,
    error: Optional[BaseException],
    arrays: Sequence[np.ndarray],
    args: tuple[Any, ...],
    what: str,
    match: Optional[str],
) -> NoReturn:
    """The error path of :func:`_agree`: exchange the details (a second, pickled collective
    that every rank makes, since every rank saw the same table) and raise on every rank."""
    shapes = match == "shape"
    mine = None if error is None else (type(error).__name__, str(error))
    described = [] if error is not None or match is None else [_describe(a, shapes) for a in arrays]
    details = comm.allgather((mine, args, described))
    size = comm.Get_size()
    failed = [rank for rank, (err, _, _) in enumerate(details) if err is not None]
    if failed:
        if error is not None:
            raise error
        rank = failed[0]
        name, message = details[rank][0]
        cls = _BUILTIN_ERRORS.get(name, RuntimeError)
        raise cls(f"{where}: rank {rank} of {size} raised {name}: {message}")
    args0, described0 = details[0][1], details[0][2]
    for rank, (_, args_r, described_r) in enumerate(details):
        for (key, value0), (_, value_r) in zip(args0, args_r):
            if value0 != value_r and not (value0 != value0 and value_r != value_r):
                raise ValueError(
                    f"{where}: the ranks disagree on {key}: {value0!r} on rank 0, "
                    f"{value_r!r} on rank {rank}"
                )
        if len(described_r) != len(described0):
            raise ValueError(
                f"{where}: the ranks disagree on the number of {what}s: {len(described0)} on "
                f"rank 0, {len(described_r)} on rank {rank}"
            )
        for i, (d0, dr) in enumerate(zip(described0, described_r)):
            if d0 != dr:
                raise ValueError(
                    f"{where}: the ranks disagree on {what} {i}: {d0} on rank 0, {dr} on "
                    f"rank {rank}"
                )
    raise RuntimeError(f"{where}: the ranks disagree (signature hash collision?)")  # pragma: no cover


# ---------------------------------------------------------------------------------------------
# Local collection


def _renamed(exc: Exception, names: Optional[Sequence[str]]) -> Exception:
    """``exc`` with a leading ``tensors[i]`` replaced by ``names[i]`` (the caller's name)."""
    if names is None:
        return exc
    message = str(exc)
    m = _NAME_PREFIX.match(message)
    if m is None or int(m.group(1)) >= len(names) or type(exc) not in _BUILTIN_ERRORS.values():
        return exc
    return type(exc)(names[int(m.group(1))] + message[m.end():])


def _arrays_of(tensors: object) -> tuple[list[np.ndarray], Optional[list[str]]]:
    """get_total_norm's ``tensors`` as a list of ndarrays (and names for error messages)."""
    if isinstance(tensors, np.ndarray):
        return [tensors], ["tensors"]
    seq = tensors if isinstance(tensors, (list, tuple)) else _clip._as_sequence(tensors, name="tensors")
    for i, a in enumerate(seq):
        if not isinstance(a, np.ndarray):
            raise TypeError(f"tensors[{i}] must be a NumPy ndarray, not {type(a).__name__}")
    return list(seq), None


def _grads_of(parameters: object, *, warn_if_empty_generator: bool = False) -> tuple[list[np.ndarray], list[str]]:
    """The gradients of ``parameters`` as clip_grad_norm_ takes them (``.grad is None``
    skipped), with their names for error messages."""
    if isinstance(parameters, np.ndarray):
        return [parameters], ["parameters"]
    seq = _clip._as_sequence(parameters, warn_if_empty_generator=warn_if_empty_generator)
    grads, names = [], []
    for i, item in enumerate(seq):
        if isinstance(item, np.ndarray):
            grads.append(item)
            names.append(f"parameters[{i}]")
            continue
        try:
            grad = item.grad
        except AttributeError:
            raise TypeError(
                f"parameters[{i}] must be a NumPy ndarray or have a .grad attribute, not "
                f"{type(item).__name__}"
            ) from None
        if grad is None:
            continue
        if not isinstance(grad, np.ndarray):
            raise TypeError(f"parameters[{i}].grad must be a NumPy ndarray or None, not {type(grad).__name__}")
        grads.append(grad)
        names.append(f"parameters[{i}].grad")
    return grads, names


# Views larger than this that fail the quick disjointness test are refused, as by the C layer.
_OVERLAP_ENUMERATION_LIMIT = 1 << 20


def _self_overlap(a: np.ndarray) -> int:
    """The C layer's exact test, in Python: 0 when no two elements of ``a`` share memory,
    1 when some do, 2 when ``a`` is too large a view to check."""
    if a.size <= 1 or a.flags.c_contiguous or a.flags.f_contiguous:
        return 0
    dims = sorted((abs(s), n) for s, n in zip(a.strides, a.shape) if n > 1)
    if any(s == 0 for s, _ in dims):
        return 1  # a broadcast dimension
    extent = a.itemsize
    for stride, n in dims:
        if stride < extent:
            break
        extent += stride * (n - 1)
    else:
        return 0  # each stride clears everything the smaller ones span
    if a.size > _OVERLAP_ENUMERATION_LIMIT:
        return 2
    offsets = np.zeros(1, np.int64)
    for stride, n in dims:
        offsets = (offsets[:, None] + np.arange(n, dtype=np.int64) * stride).reshape(-1)
    return int(np.unique(offsets).size < offsets.size)


def _check_writable(arrays: Sequence[np.ndarray], names: Sequence[str]) -> None:
    for a, name in zip(arrays, names):
        if not a.flags.writeable:
            raise ValueError(f"{name} is read-only; gradients are modified in place")
        overlap = _self_overlap(a)
        if overlap == 1:
            raise ValueError(
                f"{name} has elements that share memory (a broadcast or as_strided view); it "
                "cannot be modified in place"
            )
        if overlap == 2:
            raise ValueError(
                f"{name} is a view whose elements may share memory, and with {a.size} elements "
                "it is too large to check exactly; pass a copy (np.ascontiguousarray) instead"
            )


def _check_max_norm(max_norm: float) -> float:
    # The C layer's own check and messages (an empty list: nothing is scaled).
    _C.clip_grads_with_norm([], max_norm, 0.0, False)
    return float(max_norm)


# ---------------------------------------------------------------------------------------------
# Total norms


def _needs_identity(p: float) -> bool:
    return p == math.inf or p == -math.inf or p < 0


def _no_identity_error(p: float) -> RuntimeError:
    """The single-process error for an empty array under ``p`` (from the C layer itself)."""
    try:
        _C.total_norm([np.empty(0)], p, False)
    except RuntimeError as exc:
        return exc
    raise AssertionError(f"norm_type {p} has an identity")  # pragma: no cover


def _norms(
    arrays: list[np.ndarray], norm_type: float, raw: bool, names: Optional[Sequence[str]]
) -> tuple[np.ndarray, bool]:
    try:
        norms, single = _C.array_norms(arrays, norm_type, raw)
    except Exception as exc:
        raise _renamed(exc, names) from None
    return norms, bool(single)


def _shard_accumulations(
    arrays: list[np.ndarray], p: float, names: Optional[Sequence[str]]
) -> tuple[np.ndarray, Optional[np.ndarray], bool]:
    """Raw per-array accumulations of this rank's shards; an empty shard contributes the
    identity (0, or +inf for -inf). Sizes too where the norm has no identity, so that an
    array empty on every rank raises as in one process."""
    if not _needs_identity(p):
        raw, single = _norms(arrays, p, True, names)
        return raw, None, single
    full = [i for i, a in enumerate(arrays) if a.size]
    empty = [i for i, a in enumerate(arrays) if not a.size]
    raw = np.full(len(arrays), math.inf if p == -math.inf else 0.0)
    single = True
    if full:
        sub, single = _norms([arrays[i] for i in full], p, True, [_name(names, i) for i in full])
        raw[full] = sub
    if empty:  # validated (dtype, alignment) under a norm that accepts them
        single &= _norms([arrays[i] for i in empty], 2.0, True, [_name(names, i) for i in empty])[1]
    sizes = np.array([a.size for a in arrays], np.float64)
    return raw, sizes, single


def _name(names: Optional[Sequence[str]], i: int) -> str:
    return f"tensors[{i}]" if names is None else names[i]


def _nonfinite_error(p: float) -> RuntimeError:
    return RuntimeError(
        f"The total norm of order {float(p)!r} for gradients from `parameters` is non-finite, so it "
        "cannot be clipped. To disable this error and scale the gradients by the non-finite norm "
        "anyway, set `error_if_nonfinite=False`"
    )


def _total(
    comm: Any,
    where: str,
    collect: Callable[[], _Collected],
    norm_type: float | str,
    error_if_nonfinite: bool,
    sharded: bool,
    extra_args: tuple[Any, ...] = (),
) -> tuple[np.floating, list[np.ndarray]]:
    """The distributed total norm of the arrays ``collect()`` returns on each rank, and
    those arrays. ``collect`` may raise: the error is then raised on every rank."""
    _check_comm(comm)
    error: Optional[BaseException] = None
    arrays: list[np.ndarray] = []
    values, sizes, single, p = _NO_ARRAYS, None, True, math.nan
    try:
        arrays, names = collect()
        norm = _clip._norm_type(norm_type)
        if sharded:
            _norms([], norm, True, None)  # the C layer validates norm_type
            p = float(norm)
            values, sizes, single = _shard_accumulations(arrays, p, names)
        else:
            values, single = _norms(arrays, norm, False, names)
            p = float(norm)
    except Exception as exc:
        error = exc
    args = (("norm_type", p), ("sharded", bool(sharded)),
            ("error_if_nonfinite", bool(error_if_nonfinite))) + extra_args
    table = _agree(comm, where, error, arrays, args, single=single, match="dtype" if sharded else None)
    single = bool(table[:, 2].all())
    if sharded:
        total = _sharded_total(comm, values, sizes, p, len(arrays), single)
    else:
        total = _gathered_total(comm, values, table[:, 1], p, single)
    if error_if_nonfinite and not math.isfinite(total):
        raise _nonfinite_error(p)
    return total, arrays


def _gathered_total(comm: Any, norms: np.ndarray, counts: np.ndarray, p: float, single: bool) -> np.floating:
    # Every rank's per-array norms, concatenated in rank order, finished as one process would.
    n = int(counts.sum())
    if n == 0:
        return np.float32(0.0)
    everything = np.empty(n, np.float64)
    comm.Allgatherv(np.ascontiguousarray(norms, np.float64), [everything, counts.tolist()])
    return _C.combine_norms(everything, p, False, single)


def _sharded_total(
    comm: Any, raw: np.ndarray, sizes: Optional[np.ndarray], p: float, n: int, single: bool
) -> np.floating:
    payload = raw if sizes is None else np.concatenate([raw, sizes])
    table = np.empty((comm.Get_size(), payload.size), np.float64)
    comm.Allgather(np.ascontiguousarray(payload, np.float64), table)
    if sizes is not None and (table[:, n:].sum(axis=0) == 0).any():
        raise _no_identity_error(p)
    if n == 0:
        return np.float32(0.0)
    raws = table[:, :n]
    if p == 0:
        # The outer level counts the arrays with a non-zero element anywhere (exact sums).
        counts = raws[0].copy()
        for row in raws[1:]:
            counts += row
        return _C.combine_norms(counts, p, False, single)
    # Partial sums (or maxima/minima) of every shard, combined in rank-major order.
    return _C.combine_norms(np.ascontiguousarray(raws).reshape(-1), p, True, single)


def get_total_norm(
    tensors: np.ndarray | Iterable[np.ndarray],
    norm_type: float | str = 2.0,
    *,
    comm: Any,
    error_if_nonfinite: bool = False,
    sharded: bool = False,
) -> np.floating:
    """The total norm of the arrays of every rank, identical on every rank.

    Parameters
    ----------
    tensors : ndarray or iterable of ndarray
        This rank's arrays, as for :func:`gradclip.get_total_norm`. A rank may have none.
    norm_type : float or {'inf', '-inf'}, default 2.0
        Any order the single-process function takes (positive, fractional, 0, negative,
        ``inf``, ``-inf``); the same on every rank.
    comm : mpi4py.MPI.Comm
        The communicator; every rank of it calls this function.
    error_if_nonfinite : bool, default False
        Raise ``RuntimeError`` (torch's message) on every rank if the total is NaN or inf.
    sharded : bool, default False
        False: each array lives whole on one rank (model or pipeline parallel); the total is
        the norm of the union of all ranks' arrays. True: every rank holds one shard of each
        array (ZeRO/FSDP style): the ``i``-th array of every rank is a piece of the same
        array (an empty piece is fine), so every rank must pass the same number of arrays,
        with the same dtypes.

    Returns
    -------
    numpy.float32 or numpy.float64
        The same value on every rank: float64 if any array on any rank is float64 or
        complex128, else float32 (``float32(0.0)`` if no rank has an array).

    Raises
    ------
    TypeError, ValueError, RuntimeError
        The single-process errors (an unsupported dtype, an empty array under a norm
        without identity, a non-finite total with ``error_if_nonfinite``), raised on every
        rank together; on the ranks where the error did not occur its type is kept and the
        message names the rank. ``ValueError`` on every rank when the ranks disagree on
        ``norm_type``, ``sharded`` or ``error_if_nonfinite``, or (sharded) on the number or
        dtypes of the arrays.

    Notes
    -----
    Default: every rank computes its per-array norms, exactly as the single-process total
    does internally, and the ranks gather them (8 bytes per array, one ``Allgatherv``
    after the one agreement ``Allgather``); every rank then finishes the total from the
    norms in rank order. The result is **bit-identical** to
    ``gradclip.get_total_norm(rank0_arrays + rank1_arrays + ...)``.

    ``sharded=True``: each rank's raw per-array accumulations (``sum |x|^p``, ``max|x|``,
    ``min|x|`` or the count of non-zeros for p = 0) are gathered (8 bytes per array, 16 for
    norms without identity, which also send sizes) and combined in rank-major order, then
    rooted once. The result is identical on every rank and independent of MPI's reduction
    order. It equals the single-process total of the unsharded arrays exactly for ``inf``,
    ``-inf`` and ``0``; otherwise to rounding, since the elements are summed in a different
    order and each array's norm is not rooted and re-raised: for float32 results within
    one float32 ulp (usually equal), for float64 within a relative ``1e-13 * max(1, |p|)``
    on well-scaled data.
    """
    total, _ = _total(comm, "get_total_norm", lambda: _arrays_of(tensors), norm_type,
                      error_if_nonfinite, sharded)
    return total


def clip_grad_norm_(
    parameters: _clip.ArraysOrParameters,
    max_norm: float,
    norm_type: float | str = 2.0,
    *,
    comm: Any,
    error_if_nonfinite: bool = False,
    sharded: bool = False,
) -> np.floating:
    """Clip every rank's gradients by their common total norm; return the total.

    The distributed :func:`gradclip.clip_grad_norm_`: the total is
    :func:`get_total_norm` over every rank's gradients (``sharded`` as there), identical on
    every rank, and each rank then scales its own gradients by
    ``min(max_norm / (total + 1e-6), 1)`` exactly as :func:`gradclip.clip_grads_with_norm_`
    does. Nothing is modified on any rank if any rank raises.

    Parameters
    ----------
    parameters : ndarray, Parameter or iterable
        This rank's gradients, or objects with a ``.grad`` (``None`` skipped), as for
        :func:`gradclip.clip_grad_norm_`. Modified in place.
    max_norm : float
        The largest allowed total norm; non-negative and the same on every rank.
    norm_type : float or {'inf', '-inf'}, default 2.0
        As for :func:`get_total_norm`.
    comm : mpi4py.MPI.Comm
        The communicator; every rank of it calls this function.
    error_if_nonfinite : bool, default False
        Raise ``RuntimeError`` on every rank, before anything is modified, if the total is
        NaN or infinite.
    sharded : bool, default False
        As for :func:`get_total_norm`.

    Returns
    -------
    numpy.float32 or numpy.float64
        The total norm before clipping, the same on every rank.

    Notes
    -----
    For data-parallel training (every rank holds the same parameters), average the
    gradients with :func:`allreduce_grads_` and clip with the plain, local
    :func:`gradclip.clip_grad_norm_`: the gradients are then identical on every rank, and
    so is the local total. This function is for gradients that differ between ranks:
    model/pipeline parallelism (default) and sharded parameters (``sharded=True``).
    """

    def collect() -> _Collected:
        grads, names = _grads_of(parameters, warn_if_empty_generator=True)
        _check_writable(grads, names)
        _check_max_norm(max_norm)
        return grads, names

    total, grads = _total(comm, "clip_grad_norm_", collect, norm_type, error_if_nonfinite,
                          sharded, (("max_norm", _float_or_nan(max_norm)),))
    _clip.clip_grads_with_norm_(grads, max_norm, total)
    return total


def _float_or_nan(value: float) -> float:
    try:
        return float(value)
    except Exception:
        return math.nan


def _clip_coef(total: np.floating, max_norm: float) -> float:
    """``gc_clip_coef``: torch's coefficient, step by step in the total's precision."""
    with np.errstate(all="ignore"):
        if np.asarray(total).dtype == np.float32:
            one = np.float32(1.0)
            coef32 = (one / (np.float32(total) + np.float32(1e-6))) * np.float32(max_norm)
            return 1.0 if one < coef32 else float(coef32)
        coef = (1.0 / (float(total) + 1e-6)) * float(max_norm)
        return 1.0 if 1.0 < coef else coef


def _clip_and_step(
    optimizer: Optimizer,
    comm: Any,
    max_norm: float,
    norm_type: float | str,
    error_if_nonfinite: bool,
    grads: Optional[list[Any] | tuple[Any, ...]],
    write_back: bool,
    sharded: bool,
) -> np.floating:
    """:meth:`gradclip.optim.Optimizer.clip_and_step` with ``comm``: the distributed total
    and coefficient, then the optimizer's own fused update."""
    batches: list[_Batch] = []

    def collect() -> _Collected:
        nonlocal batches
        try:
            batches = optimizer._collect(grads)
            every_grad = [g for batch in batches for g in batch.grads]
            if write_back:
                _check_writable(every_grad, [f"gradient {i}" for i in range(len(every_grad))])
        except Exception:
            optimizer._explain(grads, writable_grads=write_back)
            raise
        _check_max_norm(max_norm)
        return every_grad, None

    total, _ = _total(comm, "clip_and_step", collect, norm_type, error_if_nonfinite, sharded,
                      (("max_norm", _float_or_nan(max_norm)), ("write_back", bool(write_back))))
    try:
        optimizer._apply(batches, _clip_coef(total, max_norm), write_back)
    except Exception:
        optimizer._explain(grads, writable_grads=write_back)
        raise
    return total


# ---------------------------------------------------------------------------------------------
# Buckets: arrays of one dtype packed into contiguous buffers of at most bucket_bytes


def _read(a: np.ndarray, start: int, stop: int) -> np.ndarray:
    """Elements ``start:stop`` of ``a`` in C order: ``a`` itself when whole (copied by
    shape, any layout), else a view of a contiguous array or a copy."""
    if start == 0 and stop == a.size:
        return a
    if a.flags.c_contiguous:
        return a.reshape(-1)[start:stop]
    return a.flat[start:stop]


def _write(a: np.ndarray, start: int, stop: int, values: np.ndarray) -> None:
    if start == 0 and stop == a.size:
        a[...] = values.reshape(a.shape)
    elif a.flags.c_contiguous:
        a.reshape(-1)[start:stop] = values
    else:
        a.flat[start:stop] = values


#: An element range of an array: (array, start, stop), in C order.
_Segment: TypeAlias = tuple[np.ndarray, int, int]


class _Bucket:
    """Consecutive (C-order) element ranges of arrays of one dtype, as one 1-D buffer."""

    __slots__ = ("dtype", "segments", "size")

    def __init__(self, dtype: np.dtype, segments: list[_Segment], size: int) -> None:
        self.dtype, self.segments, self.size = dtype, segments, size

    def buffer(self, fill: bool) -> tuple[np.ndarray, bool]:
        """The bucket's buffer, and whether it is a copy (to unpack after): a single
        contiguous range is the array's own memory."""
        if len(self.segments) == 1 and self.segments[0][0].flags.c_contiguous:
            a, start, stop = self.segments[0]
            return a.reshape(-1)[start:stop], False
        buf = np.empty(self.size, self.dtype)
        if fill:
            offset = 0
            for a, start, stop in self.segments:
                n = stop - start
                buf[offset:offset + n].reshape(a.shape if n == a.size else (n,))[...] = _read(a, start, stop)
                offset += n
        return buf, True

    def unpack(self, buf: np.ndarray) -> None:
        offset = 0
        for a, start, stop in self.segments:
            _write(a, start, stop, buf[offset:offset + stop - start])
            offset += stop - start


def _buckets(arrays: Sequence[np.ndarray], bucket_bytes: int) -> list[_Bucket]:
    by_dtype: dict[np.dtype, list[np.ndarray]] = {}
    for a in arrays:
        if a.size:
            by_dtype.setdefault(a.dtype, []).append(a)
    buckets = []
    for dtype, group in by_dtype.items():
        cap = max(1, bucket_bytes // dtype.itemsize)
        segments, used = [], 0
        for a in group:
            start = 0
            while start < a.size:
                take = min(a.size - start, cap - used)
                segments.append((a, start, start + take))
                used += take
                start += take
                if used == cap:
                    buckets.append(_Bucket(dtype, segments, used))
                    segments, used = [], 0
        if segments:
            buckets.append(_Bucket(dtype, segments, used))
    return buckets


def _check_bucket_bytes(bucket_bytes: object) -> int:
    if isinstance(bucket_bytes, bool) or not isinstance(bucket_bytes, (int, np.integer)):
        raise TypeError(f"bucket_bytes must be an int, not {type(bucket_bytes).__name__}")
    if not 16 <= bucket_bytes <= 2**30:
        raise ValueError(f"bucket_bytes must be between 16 and 2**30, got {bucket_bytes}")
    return int(bucket_bytes)


def _check_root(comm: Any, root: object) -> int:
    if isinstance(root, bool) or not isinstance(root, (int, np.integer)):
        raise TypeError(f"root must be an int, not {type(root).__name__}")
    if not 0 <= root < comm.Get_size():
        raise ValueError(f"root must be a rank of comm (0 to {comm.Get_size() - 1}), got {root}")
    return int(root)


def _chunks(size: int, ranks: int) -> tuple[list[int], list[int]]:
    counts = [size // ranks + (k < size % ranks) for k in range(ranks)]
    displs = [0] * ranks
    for k in range(1, ranks):
        displs[k] = displs[k - 1] + counts[k - 1]
    return counts, displs


def _reduce_bucket(comm: Any, bucket: _Bucket, mean: bool) -> None:
    """Sum (or average) one bucket over the ranks, in rank order, identically on every rank.

    A reduce-scatter with a fixed order, then an allgather: rank k receives the k-th chunk
    of every rank's bucket (``Alltoallv``), adds them in rank order, divides, and every
    rank receives every reduced chunk (``Allgatherv``, in place). Each element is reduced by
    one rank only, so every rank gets the same bits, whatever MPI's algorithms.
    """
    ranks, me = comm.Get_size(), comm.Get_rank()
    buf, packed = bucket.buffer(fill=True)
    item = bucket.dtype.itemsize
    counts, displs = _chunks(bucket.size, ranks)
    byte_counts = [c * item for c in counts]
    byte_displs = [d * item for d in displs]
    mine = counts[me]
    received = np.empty((ranks, mine), bucket.dtype)
    comm.Alltoallv(
        [buf.view(np.uint8), (byte_counts, byte_displs), MPI.BYTE],
        [received.view(np.uint8).reshape(-1), ([mine * item] * ranks, [r * mine * item for r in range(ranks)]), MPI.BYTE],
    )
    # float16 is summed in float32 and rounded once.
    acc = received[0].astype(np.float32 if bucket.dtype == np.float16 else bucket.dtype)
    for row in received[1:]:
        np.add(acc, row, out=acc)
    if mean:
        np.divide(acc, ranks, out=acc)
    buf[displs[me]:displs[me] + mine] = acc
    comm.Allgatherv(MPI.IN_PLACE, [buf.view(np.uint8), (byte_counts, byte_displs), MPI.BYTE])
    if packed:
        bucket.unpack(buf)


def allreduce_grads_(
    parameters: _clip.ArraysOrParameters,
    *,
    comm: Any,
    op: str = "mean",
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
) -> None:
    """Average (or sum) the gradients over the ranks in place: data-parallel training.

    Parameters
    ----------
    parameters : ndarray, Parameter or iterable
        This rank's gradients, or objects with a ``.grad`` (``None`` skipped), as for
        :func:`gradclip.clip_grad_norm_`: float16, float32, float64, complex64 or complex128,
        any layout, writable. Every rank must pass the same number of gradients with the
        same dtypes and shapes, in the same order.
    comm : mpi4py.MPI.Comm
        The communicator; every rank of it calls this function.
    op : {"mean", "sum"}, default "mean"
        Average over the ranks (the gradient of the mean loss over the whole batch when each
        rank's loss is the mean over its equal share) or sum.
    bucket_bytes : int, default 25 MiB
        Gradients of one dtype are packed, in order, into contiguous buckets of at most this
        many bytes (a larger array spans several), so that many small gradients cost few
        messages. The same on every rank. The results do not depend on it.

    Raises
    ------
    TypeError, ValueError
        A gradient that is not a writable float array, a bad ``op`` or ``bucket_bytes``;
        raised on every rank together (on the others naming the rank), before anything is
        sent. ``ValueError`` on every rank if the ranks disagree on the number, dtypes or
        shapes of the gradients, on ``op`` or on ``bucket_bytes``.

    Notes
    -----
    Each element becomes ``(((g_0 + g_1) + g_2) + ... + g_{N-1}) / N`` (``g_k`` from rank
    ``k``, every operation rounded in the gradient's dtype; float16 is summed and divided in
    float32 and rounded once), on every rank the same bits: per bucket one ``Alltoallv``
    (rank k receives the k-th 1/N of every rank's bucket and reduces it in rank order) and
    one ``Allgatherv`` of the reduced pieces; each rank sends and receives ``(N - 1) / N``
    of the gradient bytes twice, as a ring allreduce does. With one rank nothing is sent.
    """
    error: Optional[BaseException] = None
    grads: list[np.ndarray] = []
    _check_comm(comm)
    try:
        grads, names = _grads_of(parameters)
        for g, name in zip(grads, names):
            if g.dtype not in _REDUCIBLE:
                raise TypeError(
                    f"{name} has dtype {g.dtype}; allreduce_grads_ works on float16, float32, "
                    "float64, complex64 and complex128 arrays in native byte order"
                )
        _check_writable(grads, names)
        if op not in ("mean", "sum"):
            raise ValueError(f"op must be 'mean' or 'sum', got {op!r}")
        bucket_bytes = _check_bucket_bytes(bucket_bytes)
    except Exception as exc:
        error = exc
    _agree(comm, "allreduce_grads_", error, grads, (("op", op), ("bucket_bytes", bucket_bytes)),
           what="gradient", match="shape")
    if comm.Get_size() == 1:
        return  # a sum or mean over one rank is the gradient itself
    for bucket in _buckets(grads, bucket_bytes):
        _reduce_bucket(comm, bucket, op == "mean")


# ---------------------------------------------------------------------------------------------
# Broadcasts


def _values_of(parameters: object) -> list[np.ndarray]:
    if isinstance(parameters, (np.ndarray, Parameter)):
        parameters = [parameters]
    elif not isinstance(parameters, Iterable) or isinstance(parameters, (str, bytes)):
        raise TypeError(
            f"parameters must be an iterable of arrays or Parameters, not {type(parameters).__name__}"
        )
    values = []
    for i, p in enumerate(parameters):
        value = p.data if isinstance(p, Parameter) else p
        if not isinstance(value, np.ndarray):
            raise TypeError(f"parameters[{i}] must be an ndarray or a Parameter, not {type(p).__name__}")
        if value.dtype.hasobject:
            raise TypeError(f"parameters[{i}] has dtype {value.dtype}, which holds Python objects")
        values.append(value)
    return values


def _broadcast_arrays(comm: Any, arrays: Sequence[np.ndarray], root: int, bucket_bytes: int) -> None:
    receiving = comm.Get_rank() != root
    for bucket in _buckets(arrays, bucket_bytes):
        buf, packed = bucket.buffer(fill=not receiving)
        comm.Bcast([buf.view(np.uint8).reshape(-1), MPI.BYTE], root=root)
        if packed and receiving:
            bucket.unpack(buf)


def broadcast_parameters_(
    parameters: Iterable[object],
    *,
    comm: Any,
    root: int = 0,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
) -> None:
    """Copy rank ``root``'s parameter values into every other rank's parameters, in place.

    Parameters
    ----------
    parameters : iterable of Parameter or ndarray
        The values (a Parameter's ``.data``); the same number, dtypes and shapes on every
        rank. Written in place on every rank but ``root``.
    comm : mpi4py.MPI.Comm
        The communicator; every rank of it calls this function.
    root : int, default 0
        The rank whose values are sent.
    bucket_bytes : int, default 25 MiB
        Arrays of one dtype go in ``Bcast`` messages of at most this many bytes.

    Raises
    ------
    TypeError, ValueError
        As :func:`allreduce_grads_`, on every rank together.
    """
    error: Optional[BaseException] = None
    values: list[np.ndarray] = []
    _check_comm(comm)
    try:
        values = _values_of(parameters)
        for i, v in enumerate(values):
            if not v.flags.writeable:
                raise ValueError(f"parameters[{i}] is read-only")
        root = _check_root(comm, root)
        bucket_bytes = _check_bucket_bytes(bucket_bytes)
    except Exception as exc:
        error = exc
    _agree(comm, "broadcast_parameters_", error, values, (("root", root), ("bucket_bytes", bucket_bytes)),
           what="parameter", match="shape")
    if comm.Get_size() > 1:
        _broadcast_arrays(comm, values, root, bucket_bytes)


class _Slot:
    """Where an array of a state dict goes while its structure is pickled."""

    __slots__ = ("index", "dtype", "shape")

    def __init__(self, index: int, dtype: str, shape: tuple[int, ...]) -> None:
        self.index, self.dtype, self.shape = index, dtype, shape

    def __reduce__(self) -> tuple[type[_Slot], tuple[int, str, tuple[int, ...]]]:
        return (_Slot, (self.index, self.dtype, self.shape))


def _split(obj: object, arrays: list[np.ndarray]) -> object:
    """``obj`` with every ndarray replaced by a :class:`_Slot` (appended to ``arrays``)."""
    if isinstance(obj, np.ndarray) and not obj.dtype.hasobject:
        arrays.append(obj if obj.flags.c_contiguous else obj.copy(order="C"))  # 0-d stays 0-d
        return _Slot(len(arrays) - 1, obj.dtype.str, obj.shape)
    if isinstance(obj, dict):
        return {k: _split(v, arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_split(v, arrays) for v in obj)
    return obj


def _fill(obj: object, arrays: list[np.ndarray]) -> object:
    if isinstance(obj, _Slot):
        return arrays[obj.index]
    if isinstance(obj, dict):
        return {k: _fill(v, arrays) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(_fill(v, arrays) for v in obj)
    return obj


def broadcast_optimizer_state_(
    optimizer: Any,
    *,
    comm: Any,
    root: int = 0,
    bucket_bytes: int = DEFAULT_BUCKET_BYTES,
) -> None:
    """Give every rank's optimizer rank ``root``'s state and hyper-parameters.

    Parameters
    ----------
    optimizer : gradclip.optim.Optimizer
        The optimizer of this rank, over the same parameter groups (same number of groups
        and of parameters in each) as on every other rank.
    comm : mpi4py.MPI.Comm
        The communicator; every rank of it calls this function.
    root : int, default 0
        The rank whose ``optimizer.state_dict()`` is loaded by the others.
    bucket_bytes : int, default 25 MiB
        State arrays of one dtype go in ``Bcast`` messages of at most this many bytes.

    Notes
    -----
    The state dict's structure and scalars are pickled (one ``bcast``); its arrays are sent
    as raw buffers, bucketed. The other ranks then call ``optimizer.load_state_dict``,
    which copies the arrays (cast to each parameter's dtype, as always).
    """
    error: Optional[BaseException] = None
    _check_comm(comm)
    sizes: list[int] = []
    values: list[np.ndarray] = []
    try:
        if not (hasattr(optimizer, "state_dict") and hasattr(optimizer, "load_state_dict")):
            raise TypeError(f"optimizer must be a gradclip.optim.Optimizer, not {type(optimizer).__name__}")
        root = _check_root(comm, root)
        bucket_bytes = _check_bucket_bytes(bucket_bytes)
        sizes = [len(g["params"]) for g in optimizer.param_groups]
        values = _values_of([p for g in optimizer.param_groups for p in g["params"]])
    except Exception as exc:
        error = exc
    _agree(comm, "broadcast_optimizer_state_", error, values,
           (("root", root), ("bucket_bytes", bucket_bytes), ("parameters per group", sizes)),
           what="parameter", match="shape")
    if comm.Get_size() == 1:
        return
    arrays: list[np.ndarray] = []
    skeleton = _split(optimizer.state_dict(), arrays) if comm.Get_rank() == root else None
    skeleton, layout = comm.bcast((skeleton, [(a.dtype.str, a.shape) for a in arrays]), root=root)
    if comm.Get_rank() != root:
        arrays = [np.empty(shape, np.dtype(dtype)) for dtype, shape in layout]
    _broadcast_arrays(comm, arrays, root, bucket_bytes)
    if comm.Get_rank() != root:
        optimizer.load_state_dict(_fill(skeleton, arrays))
