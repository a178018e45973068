"""Distributed total norms and clipping against the single-process functions (run by mpiexec).

Every rank draws the same arrays from the same seeds (the single-process reference is the
whole list) and keeps its own part: a contiguous run of whole arrays (default mode) or one
piece of every array (sharded). See tests/mpi/harness.py for how checks run.
"""

from __future__ import annotations

import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import Expect, bits, outcome, run, same_on_all  # noqa: E402

import gradclip  # noqa: E402
import gradclip.distributed as dist  # noqa: E402
import gradclip.optim as optim  # noqa: E402

NORMS = [2.0, 1.0, 0.0, math.inf, -math.inf, 0.5, 3.0, 1.5, -1.0, -0.5]
DTYPES = [np.float16, np.float32, np.float64, np.complex64, np.complex128]


def _no_identity(p: float) -> bool:
    return p < 0 or math.isinf(p)


def _draw(rng, dtype, size):
    x = np.asarray(rng.standard_normal(size) * 10.0 ** rng.integers(-3, 4))
    if np.dtype(dtype).kind == "c":
        x = np.asarray(x + 1j * rng.standard_normal(size))
    if rng.random() < 0.2:
        x[rng.random(size) < 0.5] = 0  # zeros, and now and then an all-zero array
    return x.astype(dtype)


def _layout(rng, a):
    """The same values in a random memory layout."""
    kind = rng.integers(0, 4)
    if a.ndim >= 2 and kind == 1:
        return np.asfortranarray(a)
    if kind == 2:
        big = np.zeros((2,) + a.shape, a.dtype)
        big[0] = a
        return big[0, ...]  # a view into a larger buffer
    if a.ndim >= 2 and kind == 3:
        return np.ascontiguousarray(a.T).T  # a transposed view
    return a


def _arrays(rng, allow_empty):
    arrays = []
    mixed = rng.random() < 0.3
    base = DTYPES[rng.integers(len(DTYPES))]
    for _ in range(rng.integers(0, 8)):
        dtype = DTYPES[rng.integers(len(DTYPES))] if mixed else base
        shape = tuple(int(s) for s in rng.integers(0 if allow_empty else 1, 6, size=rng.integers(0, 4)))
        arrays.append(_layout(rng, _draw(rng, dtype, shape)))
    if rng.random() < 0.1:  # a long array: several blocks of the C reduction
        arrays.append(_draw(rng, base, 70_000))
    return arrays


def _split(rng, n, ranks):
    """Cut points of a random split of n items over the ranks (some ranks may get none)."""
    cuts = np.sort(rng.integers(0, n + 1, size=ranks - 1))
    return [0, *cuts.tolist(), n]


def _same_total(t, ref) -> bool:
    return bits(t) == bits(ref)


def check_default_bit_identical(comm):
    """Default mode: bit-identical to the single-process total of the concatenated lists,
    for every norm and dtype, random splits, and identical on every rank."""
    ex = Expect()
    ranks, rank = comm.Get_size(), comm.Get_rank()
    cases = 0
    for seed in range(40):
        rng = np.random.default_rng(seed)
        allow_empty = seed % 2 == 0
        arrays = _arrays(rng, allow_empty)
        cuts = _split(rng, len(arrays), ranks)
        mine = arrays[cuts[rank]:cuts[rank + 1]]
        for p in NORMS:
            if allow_empty and _no_identity(p) and any(a.size == 0 for a in arrays):
                continue
            ref = gradclip.get_total_norm(arrays, p)
            total = dist.get_total_norm(mine, p, comm=comm)
            cases += 1
            ex(_same_total(total, ref), f"seed {seed} p={p}: {total!r} != single-process {ref!r}")
            ex(same_on_all(comm, total), f"seed {seed} p={p}: totals differ between ranks")
    ex(cases > 300, f"only {cases} cases")
    ex.done()


def _shards(rng, arrays, ranks):
    """Each array flattened (C order) and cut into one piece per rank, some empty."""
    pieces = [[] for _ in range(ranks)]
    for a in arrays:
        flat = a.reshape(-1)
        cuts = _split(rng, flat.size, ranks)
        for r in range(ranks):
            pieces[r].append(flat[cuts[r]:cuts[r + 1]])
    return pieces


def _close(total, ref, p) -> bool:
    """The documented agreement of a sharded total with the single-process one."""
    t, r = float(total), float(ref)
    if math.isnan(r):
        return math.isnan(t)
    if p in (0.0, math.inf, -math.inf):
        return bits(total) == bits(ref)
    if np.asarray(ref).dtype == np.float32:
        return abs(t - r) <= float(np.spacing(np.float32(abs(r))))
    return abs(t - r) <= 1e-13 * max(1.0, abs(p)) * abs(r)


def check_sharded(comm):
    """sharded=True: identical on every rank, equal within the documented rounding to the
    single-process total of the whole arrays (exactly for inf, -inf and 0)."""
    ex = Expect()
    ranks, rank = comm.Get_size(), comm.Get_rank()
    worst = 0.0
    for seed in range(40):
        rng = np.random.default_rng(1000 + seed)
        allow_empty = seed % 2 == 0
        arrays = [np.ascontiguousarray(a) for a in _arrays(rng, allow_empty)]
        mine = _shards(rng, arrays, ranks)[rank]
        for p in NORMS:
            if allow_empty and _no_identity(p) and any(a.size == 0 for a in arrays):
                continue
            ref = gradclip.get_total_norm(arrays, p)
            total = dist.get_total_norm(mine, p, comm=comm, sharded=True)
            ex(np.asarray(total).dtype == np.asarray(ref).dtype, f"seed {seed} p={p}: dtype {total!r} vs {ref!r}")
            ex(_close(total, ref, p), f"seed {seed} p={p}: sharded {total!r} vs single-process {ref!r}")
            ex(same_on_all(comm, total), f"seed {seed} p={p}: totals differ between ranks")
            if math.isfinite(float(ref)) and float(ref) != 0:
                worst = max(worst, abs(float(total) - float(ref)) / abs(float(ref)))
    if rank == 0:
        print(f"    sharded: largest relative difference from single-process {worst:.2e}", flush=True)
    ex.done()


def check_sharded_empty_pieces(comm):
    """An array empty on some ranks is fine under every norm; empty on all, the
    single-process error on every rank (norms without identity)."""
    ex = Expect()
    ranks, rank = comm.Get_size(), comm.Get_rank()
    full = np.arange(1.0, 6.0, dtype=np.float32)
    mine = [full if rank == 0 else full[:0], np.ones(2) if rank == ranks - 1 else np.ones(0)]
    for p in NORMS:
        ref = gradclip.get_total_norm([full, np.ones(2)], p)
        total = dist.get_total_norm(mine, p, comm=comm, sharded=True)
        ex(_close(total, ref, p), f"p={p}: {total!r} vs {ref!r}")
    for p in (math.inf, -math.inf, -1.0):
        err, _ = outcome(lambda: dist.get_total_norm([full, np.ones(0)], p, comm=comm, sharded=True))
        single, _ = outcome(lambda: gradclip.get_total_norm([np.ones(0)], p))
        ex(err == single, f"p={p}: {err} vs single-process {single}")
    for p in (2.0, 0.0, 1.0):
        total = dist.get_total_norm([np.ones(0, np.float32)], p, comm=comm, sharded=True)
        ex(bits(total) == bits(np.float32(0.0)), f"p={p}: empty everywhere gives {total!r}")
    ex.done()


def check_empty_ranks(comm):
    """Ranks without arrays contribute nothing; no arrays anywhere gives float32(0.0)."""
    ex = Expect()
    rank = comm.Get_rank()
    arrays = [np.array([3.0, 4.0]), np.array([1.0], np.float32)]
    for p in NORMS:
        mine = arrays if rank == 0 else []
        total = dist.get_total_norm(mine, p, comm=comm)
        ex(bits(total) == bits(gradclip.get_total_norm(arrays, p)), f"p={p}: {total!r}")
        ex(bits(dist.get_total_norm([], p, comm=comm)) == bits(np.float32(0.0)), f"p={p}: empty")
        ex(bits(dist.get_total_norm([], p, comm=comm, sharded=True)) == bits(np.float32(0.0)), "empty sharded")
    # float64 on one rank makes everyone's total float64.
    mine = [np.ones(3, np.float64)] if rank == comm.Get_size() - 1 else [np.ones(2, np.float32)]
    ex(np.asarray(dist.get_total_norm(mine, comm=comm)).dtype == np.float64, "float64 anywhere")
    ex.done()


def _raised_everywhere(comm, err, expected_type: str) -> list[str]:
    problems = []
    everyone = comm.allgather(err)
    for r, e in enumerate(everyone):
        if e is None:
            problems.append(f"rank {r} did not raise")
        elif e[0] != expected_type:
            problems.append(f"rank {r} raised {e[0]}: {e[1]}")
    return problems


def check_error_if_nonfinite(comm):
    """A NaN or inf on one rank: every rank raises torch's RuntimeError together, nothing
    is clipped anywhere, and the ranks stay in step."""
    ex = Expect()
    ranks, rank = comm.Get_size(), comm.Get_rank()
    for bad in (math.nan, math.inf):
        for sharded in (False, True):
            for p in (2.0, 1.0, math.inf):
                grads = [np.full(3, 2.0, np.float32), np.ones(2)]
                if rank == ranks - 1:
                    grads[1][0] = bad
                before = [g.copy() for g in grads]
                err, _ = outcome(lambda: dist.clip_grad_norm_(grads, 1.0, p, comm=comm, error_if_nonfinite=True,
                                                              sharded=sharded))
                for problem in _raised_everywhere(comm, err, "RuntimeError"):
                    ex(False, f"bad={bad} sharded={sharded} p={p}: {problem}")
                single, _ = outcome(lambda: gradclip.get_total_norm([np.array([bad])], p, error_if_nonfinite=True))
                ex(err == single, f"message {err} vs {single}")
                ex(all(np.array_equal(g, b, equal_nan=True) for g, b in zip(grads, before)), "modified")
                # Without the flag the non-finite total comes back everywhere.
                total = dist.get_total_norm(grads, p, comm=comm, sharded=sharded)
                ex(not math.isfinite(float(total)) and same_on_all(comm, total), f"total {total!r}")
    ex.done()


def check_errors_on_every_rank(comm):
    """A local error or a disagreement raises on every rank, never a hang."""
    ex = Expect()
    ranks, rank = comm.Get_size(), comm.Get_rank()
    last = rank == ranks - 1
    ok = [np.ones(3, np.float32)]
    cases = {
        "int array on one rank": (lambda: dist.get_total_norm([np.ones(3, np.int64)] if last else ok, comm=comm),
                                  "TypeError"),
        "bad norm_type on one rank": (lambda: dist.get_total_norm(ok, "two" if last else 2.0, comm=comm), "TypeError"),
        "norm_type differs": (lambda: dist.get_total_norm(ok, 1.0 if last else 2.0, comm=comm), "ValueError"),
        "sharded differs": (lambda: dist.get_total_norm(ok, comm=comm, sharded=last), "ValueError"),
        "empty array, inf norm": (lambda: dist.get_total_norm([np.ones(0)] if last else ok, "inf", comm=comm),
                                  "RuntimeError"),
        "sharded count differs": (lambda: dist.get_total_norm(ok * (1 + last), comm=comm, sharded=True),
                                  "ValueError"),
        "sharded dtype differs": (lambda: dist.get_total_norm([np.ones(3, np.float64 if last else np.float32)],
                                                              comm=comm, sharded=True), "ValueError"),
        "max_norm differs": (lambda: dist.clip_grad_norm_([np.ones(3)], 1.0 + last, comm=comm), "ValueError"),
        "negative max_norm": (lambda: dist.clip_grad_norm_([np.ones(3)], -1.0 if last else 1.0, comm=comm),
                              "ValueError"),
        "read-only gradient": (lambda: dist.clip_grad_norm_([np.ones(3)[:] if not last else _read_only()], 1.0,
                                                            comm=comm), "ValueError"),
        "not an array": (lambda: dist.clip_grad_norm_([object()] if last else [np.ones(3)], 1.0, comm=comm),
                         "TypeError"),
    }
    if ranks == 1:  # nothing can differ between ranks
        cases = {k: v for k, v in cases.items() if not any(w in k for w in ("differs",))}
    for name, (call, expected) in cases.items():
        err, _ = outcome(call)
        for problem in _raised_everywhere(comm, err, expected):
            ex(False, f"{name}: {problem}")
        if ranks > 1 and rank == 0 and err is not None and "differs" not in name:
            ex(f"rank {ranks - 1} of {ranks}" in err[1], f"{name}: the message does not name the rank: {err[1]}")
    ex.done()


def _read_only():
    a = np.ones(3)
    a.flags.writeable = False
    return a


def check_clip_grad_norm(comm):
    """Default mode: the clipped gradients are bit-identical to single-process clipping of
    the concatenated list; sharded: to clipping by the (agreed) sharded total."""
    ex = Expect()
    ranks, rank = comm.Get_size(), comm.Get_rank()
    for seed in range(20):
        rng = np.random.default_rng(2000 + seed)
        arrays = [a for a in _arrays(rng, False) if a.dtype.kind == "f"] or [np.ones(2)]
        max_norm = float(rng.choice([0.1, 1.0, 100.0]))
        p = NORMS[seed % len(NORMS)]
        cuts = _split(rng, len(arrays), ranks)
        params = [gradclip.Parameter(np.zeros_like(a)) for a in arrays]
        for prm, a in zip(params, arrays):
            prm.grad = a.copy()
        params[0].grad = None if len(params) > 2 else params[0].grad  # a None is skipped
        reference = [prm.grad.copy() for prm in params if prm.grad is not None]
        ref_total = gradclip.clip_grad_norm_(reference, max_norm, p)
        mine = params[cuts[rank]:cuts[rank + 1]]
        total = dist.clip_grad_norm_(mine, max_norm, p, comm=comm)
        ex(bits(total) == bits(ref_total), f"seed {seed}: total {total!r} vs {ref_total!r}")
        got = [prm.grad for prm in params[cuts[rank]:cuts[rank + 1]] if prm.grad is not None]
        skipped = sum(prm.grad is None for prm in params[:cuts[rank]])
        want = reference[cuts[rank] - skipped:cuts[rank] - skipped + len(got)]
        ex(all(bits(g) == bits(w) for g, w in zip(got, want)), f"seed {seed}: clipped gradients differ")

        # Sharded: every rank clips its pieces by the same total.
        whole = [np.ascontiguousarray(a) for a in arrays]
        pieces = [piece.copy() for piece in _shards(rng, whole, ranks)[rank]]
        expected = [piece.copy() for piece in pieces]
        total = dist.clip_grad_norm_(pieces, max_norm, p, comm=comm, sharded=True)
        gradclip.clip_grads_with_norm_(expected, max_norm, total)
        ex(all(bits(g) == bits(w) for g, w in zip(pieces, expected)), f"seed {seed}: sharded clip")
        ex(_close(total, gradclip.get_total_norm(whole, p), p), f"seed {seed}: sharded total {total!r}")
    ex.done()


def check_clip_coefficient(comm):
    """The coefficient clip_and_step(comm=...) applies is the C layer's, bit for bit."""
    from gradclip import _C

    ex = Expect()
    rng = np.random.default_rng(5)
    specials = [0.0, 1e-30, 1e-7, 4.999999, 5.0, 5.000001, 1e30, 3e38, math.inf, math.nan]
    for dtype in (np.float16, np.float32, np.float64):
        for value in specials + list(10.0 ** rng.uniform(-8, 8, 200)):
            with np.errstate(over="ignore"):
                g = np.array([value], dtype)  # inf where float16 cannot hold it
            for max_norm in (0.0, 1e-3, 1.0, 5.0, 1e6, 1e40):
                total, coef, _ = _C.total_norm_and_coef([g], max_norm, 2.0, False, False)
                mine = dist._clip_coef(total, max_norm)
                ex(np.float64(mine).tobytes() == np.float64(coef).tobytes(),
                   f"{np.dtype(dtype)} total {total!r} max_norm {max_norm}: {mine!r} vs {coef!r}")
    ex.done()


def check_overlap_test_matches_c(comm):
    """The writability checks made before any communication refuse exactly the views the
    C layer refuses (read-only, broadcast, overlapping as_strided views)."""
    from numpy.lib.stride_tricks import as_strided

    from gradclip import _C

    ex = Expect()
    rng = np.random.default_rng(11)
    base = np.zeros(4096)
    views = [np.broadcast_to(np.zeros(1), (4,)), np.zeros((3, 4))[:, ::2], np.zeros((4, 4)).T[::-1]]
    for _ in range(300):
        ndim = int(rng.integers(1, 4))
        shape = tuple(int(n) for n in rng.integers(1, 5, ndim))
        strides = tuple(int(s) * 8 for s in rng.integers(-6, 7, ndim))
        offset = 8 * 2048
        views.append(as_strided(base[offset // 8:], shape=shape, strides=strides, writeable=True))
    for v in views:
        mine, _ = outcome(lambda: dist._check_writable([v], ["parameters[0]"]))
        c, _ = outcome(lambda: _C.clip_grads_with_norm([v], 1.0, 0.0, False))  # scales by 1 at most
        ex(mine == c, f"shape {v.shape} strides {v.strides}: {mine} vs C {c}")
    ex.done()


def _optimizers(params):
    return [
        lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9),
        lambda ps: optim.Adam(ps, lr=0.01),
        lambda ps: optim.AdamW(ps, lr=0.01, amsgrad=True),
    ]


def check_clip_and_step(comm):
    """optimizer.clip_and_step(comm=...): default mode bit-identical to one process's
    clip_and_step over all parameters; sharded equal to clipping by the agreed total and
    stepping. The path without comm never imports mpi4py (tested in test_distributed.py)."""
    ex = Expect()
    ranks, rank = comm.Get_size(), comm.Get_rank()
    rng = np.random.default_rng(7)
    shapes = [(4, 3), (5,), (2, 2, 2), (7,), (3,)]
    values = [rng.standard_normal(s).astype(np.float32) for s in shapes]
    grads = [[rng.standard_normal(s).astype(np.float32) * 3 for s in shapes] for _ in range(4)]
    # Every rank owns at least one parameter (an optimizer needs one).
    lo, hi = [(int(b[0]), int(b[-1]) + 1) for b in np.array_split(np.arange(len(shapes)), ranks)][rank]
    for make in _optimizers(None):
        ref_params = [gradclip.Parameter(v.copy()) for v in values]
        ref = make(ref_params)
        my_params = [gradclip.Parameter(v.copy()) for v in values[lo:hi]]
        mine = make(my_params)
        for step in range(4):
            for prm, g in zip(ref_params, grads[step]):
                prm.grad = g.copy()
            ref_total = ref.clip_and_step(1.0)
            for prm, g in zip(my_params, grads[step][lo:hi]):
                prm.grad = g.copy()
            total = mine.clip_and_step(1.0, comm=comm)
            ex(bits(total) == bits(ref_total), f"{type(ref).__name__} step {step}: {total!r} vs {ref_total!r}")
        for prm, r in zip(my_params, ref_params[lo:hi]):
            ex(bits(prm.data) == bits(r.data), f"{type(ref).__name__}: parameters differ")

    # Sharded parameters (pieces of every array on every rank).
    whole = [np.ascontiguousarray(v) for v in values]
    cut = [_split(np.random.default_rng(9 + i), v.size, ranks) for i, v in enumerate(whole)]
    piece = lambda a, i: a.reshape(-1)[cut[i][rank]:cut[i][rank + 1]]  # noqa: E731
    for make in _optimizers(None):
        my_params = [gradclip.Parameter(piece(v, i).copy()) for i, v in enumerate(whole)]
        twin_params = [gradclip.Parameter(prm.data.copy()) for prm in my_params]
        mine, twin = make(my_params), make(twin_params)
        for step in range(3):
            g = [piece(gg, i).copy() for i, gg in enumerate(grads[step])]
            for prm, gi in zip(my_params, g):
                prm.grad = gi.copy()
            total = mine.clip_and_step(1.0, comm=comm, sharded=True)
            ex(same_on_all(comm, total), "sharded totals differ between ranks")
            for prm, gi in zip(twin_params, g):
                prm.grad = gi.copy()
            gradclip.clip_grads_with_norm_(twin_params, 1.0, total)
            twin.step()
        ex(all(bits(a.data) == bits(b.data) for a, b in zip(my_params, twin_params)),
           f"{type(mine).__name__}: sharded clip_and_step differs from clip + step")
    ex.done()


if __name__ == "__main__":
    run([
        check_default_bit_identical,
        check_sharded,
        check_sharded_empty_pieces,
        check_empty_ranks,
        check_error_if_nonfinite,
        check_errors_on_every_rank,
        check_clip_grad_norm,
        check_clip_coefficient,
        check_overlap_test_matches_c,
        check_clip_and_step,
    ])
