"""Data-parallel training of the demo's LSTM over N ranks, and its single-process references.

``mpiexec -n N python tests/mpi/training.py OUT.npz`` trains with batch/N streams per rank
(gradients averaged by ``allreduce_grads_``, clipped by the plain ``clip_grad_norm_``,
stepped by SGD), checks that every rank ends with the same parameters, and rank 0 saves
them. tests/test_distributed.py compares them with `reference` run in one process.
"""

from __future__ import annotations

import os
import sys

import numpy as np

import gradclip
import gradclip.optim as optim
from gradclip.demo._threads import single_threaded_blas
from gradclip.demo.data import Corpus, load_text, windows
from gradclip.demo.models import CharLSTM

STEPS = 50
BATCH = 12  # streams: divisible by 1, 2 and 3 ranks
SEQ_LEN = 25
HIDDEN = 32
LR = 1.0  # the demo's SGD setting, where clipping decides the outcome
MAX_NORM = 5.0
DTYPES = (np.float32, np.float64)  # the demo's, and one where rounding differences stay small


def _setup(dtype):
    corpus = Corpus.from_text(load_text())
    model = CharLSTM(corpus.vocab_size, HIDDEN, rng=np.random.default_rng(0), dtype=dtype)
    return corpus, model


def _share(window: np.ndarray, k: int, n: int) -> np.ndarray:
    width = BATCH // n
    return np.ascontiguousarray(window[:, k * width:(k + 1) * width])


def _gradients(model, inputs, targets, state):
    loss, cache = model.forward(inputs, targets, state)  # loss summed over time, mean over streams
    grads, _ = model.backward(cache)
    return list(grads.values()), cache.state


def train_distributed(comm, dtype, steps: int = STEPS):
    """Each rank trains on its BATCH / N streams; returns (parameters, gradient norms)."""
    import gradclip.distributed as dist

    n, rank = comm.Get_size(), comm.Get_rank()
    corpus, model = _setup(dtype)
    params = model.parameters()
    dist.broadcast_parameters_(params, comm=comm)  # equal already (same seed): exercised anyway
    optimizer = optim.SGD(params, lr=LR)
    dist.broadcast_optimizer_state_(optimizer, comm=comm)
    data = windows(corpus.train, BATCH, SEQ_LEN)
    state = model.initial_state(BATCH // n)
    norms = []
    with single_threaded_blas(), np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps):
            inputs, targets, fresh = next(data)
            if fresh:
                state = model.initial_state(BATCH // n)
            grads, state = _gradients(model, _share(inputs, rank, n), _share(targets, rank, n), state)
            for p, g in zip(params, grads):
                p.grad = g
            dist.allreduce_grads_(params, comm=comm)
            norms.append(gradclip.clip_grad_norm_(params, MAX_NORM))
            optimizer.step()
    return [p.data for p in params], np.array(norms)


def reference(n: int, dtype, steps: int = STEPS):
    """The same training in one process: the n shares' gradients computed one after another
    and averaged in rank order, as allreduce_grads_ does; n = 1 is the plain whole-batch loop."""
    corpus, model = _setup(dtype)
    params = model.parameters()
    optimizer = optim.SGD(params, lr=LR)
    data = windows(corpus.train, BATCH, SEQ_LEN)
    states = [model.initial_state(BATCH // n) for _ in range(n)]
    norms = []
    with single_threaded_blas(), np.errstate(over="ignore", invalid="ignore"):
        for _ in range(steps):
            inputs, targets, fresh = next(data)
            if fresh:
                states = [model.initial_state(BATCH // n) for _ in range(n)]
            shares = []
            for k in range(n):
                grads, states[k] = _gradients(model, _share(inputs, k, n), _share(targets, k, n), states[k])
                shares.append(grads)
            for i, p in enumerate(params):
                acc = shares[0][i].copy()
                for k in range(1, n):
                    acc += shares[k][i]
                if n > 1:
                    acc /= n
                p.grad = acc
            norms.append(gradclip.clip_grad_norm_(params, MAX_NORM))
            optimizer.step()
    return [p.data for p in params], np.array(norms)


def main() -> None:
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    expected = os.environ.get("GRADCLIP_MPI_RANKS")
    if expected is not None and int(expected) != comm.Get_size():
        print(f"expected {expected} ranks, comm has {comm.Get_size()}: mpiexec and mpi4py use "
              "different MPI libraries", flush=True)
        sys.exit(2)
    results = {}
    for dtype in DTYPES:
        params, norms = train_distributed(comm, dtype)
        flat = np.concatenate([p.reshape(-1) for p in params]).tobytes()
        everyone = comm.allgather(flat)
        if any(f != everyone[0] for f in everyone):
            print(f"{np.dtype(dtype)}: the ranks' parameters differ after training", flush=True)
            sys.exit(1)
        name = np.dtype(dtype).name
        results[f"{name}_norms"] = norms
        results.update({f"{name}_{i}": p for i, p in enumerate(params)})
        if comm.Get_rank() == 0:
            print(f"{name}: trained {len(norms)} steps on {comm.Get_size()} ranks, clipped "
                  f"{int(np.sum(norms > MAX_NORM))}", flush=True)
    if comm.Get_rank() == 0:
        np.savez(sys.argv[1], **results)


if __name__ == "__main__":
    main()
