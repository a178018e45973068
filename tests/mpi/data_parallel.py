"""allreduce_grads_ and the broadcasts against NumPy references (run by mpiexec).

Every rank can rebuild every other rank's arrays (they come from seeds), so each rank checks
its result against the rank-order reference ``(((g_0 + g_1) + g_2) + ...) / N`` itself.
"""

from __future__ import annotations

import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
from harness import Expect, bits, outcome, run, same_on_all  # noqa: E402

import gradclip  # noqa: E402
import gradclip.distributed as dist  # noqa: E402
import gradclip.optim as optim  # noqa: E402

DTYPES = [np.float16, np.float32, np.float64, np.complex64, np.complex128]
SHAPES = [(5, 7), (3,), (), (0, 4), (64, 33), (2, 3, 4), (1,), (301,)]


def _layout(a, kind):
    if kind == "F" and a.ndim >= 2:
        return np.asfortranarray(a)
    if kind == "strided":
        big = np.zeros((2,) + a.shape, a.dtype)
        big[1] = a
        return big[1, ...]  # C order, but not the start of its buffer
    if kind == "every-other":
        big = np.zeros(a.shape + (2,), a.dtype)
        big[..., 0] = a
        return big[..., 0]  # non-contiguous
    if kind == "transposed" and a.ndim >= 2:
        return np.ascontiguousarray(a.T).T
    return a


def _grads(rank, dtype, seed):
    rng = np.random.default_rng([seed, rank])
    out = []
    for shape in SHAPES:
        x = rng.standard_normal(shape) * 10.0 ** rng.integers(-2, 3)
        if np.dtype(dtype).kind == "c":
            x = x + 1j * rng.standard_normal(shape)
        out.append(np.asarray(x).astype(dtype))
    return out


def _reference(ranks, dtype, seed, mean):
    acc_dtype = np.float32 if dtype == np.float16 else dtype
    per_rank = [_grads(r, dtype, seed) for r in range(ranks)]
    result = []
    for i in range(len(SHAPES)):
        acc = per_rank[0][i].astype(acc_dtype)
        for r in range(1, ranks):
            acc = acc + per_rank[r][i]  # rounded in acc_dtype at every step
        if mean:
            acc = acc / acc_dtype(ranks) if acc.ndim else np.asarray(acc / acc_dtype(ranks))
        result.append(np.asarray(acc).astype(dtype))
    return result


def check_allreduce_matches_rank_order_reference(comm):
    """Every dtype, layout and bucket size: the rank-order reference, bit for bit, on
    every rank (so the result does not depend on bucket_bytes either)."""
    ex = Expect()
    ranks, rank = comm.Get_size(), comm.Get_rank()
    layouts = ["C", "F", "strided", "every-other", "transposed"]
    case = 0
    for dtype in DTYPES:
        for op in ("mean", "sum"):
            for bucket_bytes in (256, 4096, dist.DEFAULT_BUCKET_BYTES):
                seed = case
                case += 1
                grads = [_layout(g, layouts[(i + case) % len(layouts)]) for i, g in enumerate(_grads(rank, dtype, seed))]
                as_params = case % 2 == 0 and np.dtype(dtype).kind == "f"
                if as_params:  # Parameters (with .grad) and plain arrays alike
                    params = [gradclip.Parameter(np.zeros_like(g)) for g in grads]
                    for prm, g in zip(params, grads):
                        prm.grad = g
                dist.allreduce_grads_(params if as_params else grads, comm=comm, op=op, bucket_bytes=bucket_bytes)
                want = _reference(ranks, dtype, seed, op == "mean")
                for i, (g, w) in enumerate(zip(grads, want)):
                    ex(g.shape == w.shape and np.array_equal(g, w),
                       f"{np.dtype(dtype)} {op} bucket {bucket_bytes} gradient {i} {g.shape}: differs from "
                       f"the rank-order reference (max diff {np.max(np.abs(g - w)) if g.size else 0})")
                ex(same_on_all(comm, np.concatenate([g.reshape(-1) for g in grads])),
                   f"{np.dtype(dtype)} {op} bucket {bucket_bytes}: ranks differ")
    # A mix of dtypes in one call, bucketed per dtype.
    mixed = [_grads(rank, dt, 99)[i] for i, dt in enumerate(DTYPES)]
    dist.allreduce_grads_(mixed, comm=comm, bucket_bytes=64)
    for i, dt in enumerate(DTYPES):
        ex(np.array_equal(mixed[i], _reference(ranks, dt, 99, True)[i]), f"mixed dtypes: {np.dtype(dt)}")
    ex.done()


def check_allreduce_errors(comm):
    """Disagreements and local errors raise on every rank and change nothing anywhere."""
    ex = Expect()
    ranks, rank = comm.Get_size(), comm.Get_rank()
    last = rank == ranks - 1

    def ro():
        a = np.ones(3)
        a.flags.writeable = False
        return a

    cases = {
        "int gradient on one rank": ([np.ones(3, np.int64) if last else np.ones(3)], {}, "TypeError"),
        "read-only on one rank": ([ro() if last else np.ones(3)], {}, "ValueError"),
        "bad op": ([np.ones(3)], {"op": "max"}, "ValueError"),
        "broadcast view": ([np.broadcast_to(np.ones(1), (3,))], {}, "ValueError"),
    }
    if ranks > 1:
        cases.update({
            "shape differs": ([np.ones(4 if last else 3)], {}, "ValueError"),
            "dtype differs": ([np.ones(3, np.float32 if last else np.float64)], {}, "ValueError"),
            "count differs": ([np.ones(3)] * (1 + last), {}, "ValueError"),
            "op differs": ([np.ones(3)], {"op": "sum" if last else "mean"}, "ValueError"),
            "bucket_bytes differs": ([np.ones(3)], {"bucket_bytes": 64 if last else 128}, "ValueError"),
        })
    for name, (grads, kwargs, expected) in cases.items():
        before = [g.copy() for g in grads]
        err, _ = outcome(lambda: dist.allreduce_grads_(grads, comm=comm, **kwargs))
        for r, e in enumerate(comm.allgather(err)):
            ex(e is not None and e[0] == expected, f"{name}: rank {r} got {e}")
        ex(all(bits(g) == bits(b) for g, b in zip(grads, before)), f"{name}: modified")
    ex.done()


def check_broadcast_parameters(comm):
    ex = Expect()
    ranks, rank = comm.Get_size(), comm.Get_rank()
    for root in sorted({0, ranks - 1}):
        for bucket_bytes in (16, dist.DEFAULT_BUCKET_BYTES):
            rng = np.random.default_rng([rank, root])
            values = [rng.standard_normal(s).astype(dt) for s, dt in
                      zip(SHAPES, [np.float32, np.float64, np.float16, np.float32, np.float64, np.float32,
                                   np.float16, np.float64])]
            values[4] = np.asfortranarray(values[4])
            values[5] = values[5].transpose(2, 0, 1)
            params = [gradclip.Parameter(v) if i % 2 else v for i, v in enumerate(values)]
            root_rng = np.random.default_rng([root, root])
            want = [root_rng.standard_normal(s).astype(v.dtype) for s, v in zip(SHAPES, values)]
            want[5] = want[5].transpose(2, 0, 1)
            dist.broadcast_parameters_(params, comm=comm, root=root, bucket_bytes=bucket_bytes)
            ex(all(np.array_equal(v, w) for v, w in zip(values, want)), f"root {root} bucket {bucket_bytes}")
    if ranks > 1:
        err, _ = outcome(lambda: dist.broadcast_parameters_([np.ones(3 + (rank == 1))], comm=comm))
        for r, e in enumerate(comm.allgather(err)):
            ex(e is not None and e[0] == "ValueError" and "parameter 0" in e[1],
               f"shape mismatch: rank {r} got {e}")
        err, _ = outcome(lambda: dist.broadcast_parameters_([np.ones(3)], comm=comm, root=ranks))
        ex(err is not None and err[0] == "ValueError", f"bad root: {err}")
    ex.done()


def check_broadcast_optimizer_state(comm):
    """After broadcasting root's state, every rank's next steps match root's bit for bit."""
    ex = Expect()
    ranks, rank = comm.Get_size(), comm.Get_rank()
    for make in (lambda ps: optim.SGD(ps, lr=0.1, momentum=0.9, nesterov=True),
                 lambda ps: optim.Adam([{"params": ps[:1]}, {"params": ps[1:], "lr": 0.003}], lr=0.01,
                                       amsgrad=True)):
        shapes = [(3, 4), (5,), (2, 2)]
        start = [np.random.default_rng(s).standard_normal(shape) for s, shape in enumerate(shapes)]
        params = [gradclip.Parameter(v.copy()) for v in start]
        opt = make(params)
        steps_taken = 3 if rank == 0 else rank - 1  # the ranks' states differ (or are empty)
        rng = np.random.default_rng(rank)
        for _ in range(steps_taken):
            for prm in params:
                prm.grad = rng.standard_normal(prm.data.shape)
            opt.step()
        if rank != 0:
            opt.param_groups[0]["lr"] = 123.0  # overwritten from root
        dist.broadcast_parameters_(params, comm=comm)
        dist.broadcast_optimizer_state_(opt, comm=comm)
        ex(opt.param_groups[0]["lr"] != 123.0, "hyper-parameters not broadcast")
        grads_rng = np.random.default_rng(42)
        for _ in range(2):
            for prm in params:
                prm.grad = grads_rng.standard_normal(prm.data.shape)
            opt.step()
        for i, prm in enumerate(params):
            ex(same_on_all(comm, prm.data), f"{type(opt).__name__}: parameter {i} differs between ranks")
    ex.done()


if __name__ == "__main__":
    run([
        check_allreduce_matches_rank_order_reference,
        check_allreduce_errors,
        check_broadcast_parameters,
        check_broadcast_optimizer_state,
    ])
