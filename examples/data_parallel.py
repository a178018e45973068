"""Data-parallel training of the demo's LSTM over MPI ranks, with gradient clipping.

Every rank holds the whole model and trains on its share of the batch (``batch / N`` of the
parallel text streams); the gradients are averaged over the ranks with
``gradclip.distributed.allreduce_grads_`` — after which they are identical on every rank,
bit for bit — so the plain, local ``clip_grad_norm_`` and ``optimizer.step()`` keep every
rank's parameters identical without further communication (the Horovod pattern)::

    mpiexec -n 2 python examples/data_parallel.py
    mpiexec -n 4 python examples/data_parallel.py --steps 1000 --batch 32
    mpiexec -hosts node1,node2 -n 4 python examples/data_parallel.py   # two machines

Needs mpi4py and an MPI: ``pip install "gradclip[mpi]"`` (mpi4py and MPICH's wheels).
"""

import os

# Before NumPy loads OpenBLAS: one BLAS thread per rank (the ranks already share the cores).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import hashlib  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
from mpi4py import MPI  # noqa: E402

import gradclip.distributed as dist  # noqa: E402
import gradclip.nn.utils as torch_utils  # noqa: E402
import gradclip.optim as optim  # noqa: E402
from gradclip.demo.data import Corpus, load_text, windows  # noqa: E402
from gradclip.demo.models import MODELS  # noqa: E402
from gradclip.demo.train import evaluate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="lstm")
    parser.add_argument("--steps", type=int, default=500)
    parser.add_argument("--batch", type=int, default=16, help="streams over all ranks")
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--max-norm", type=float, default=5.0)
    args = parser.parse_args()

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    if args.batch % size:
        raise SystemExit(f"--batch {args.batch} does not split over {size} ranks")
    share, seq_len = args.batch // size, 25

    corpus = Corpus.from_text(load_text())
    model = MODELS[args.model](corpus.vocab_size, 128, rng=np.random.default_rng(rank))
    params = model.parameters()
    optimizer = optim.SGD(params, lr=args.lr)
    # Every rank started from its own seed above: make them all start from rank 0's.
    dist.broadcast_parameters_(params, comm=comm)
    dist.broadcast_optimizer_state_(optimizer, comm=comm)

    # Every rank walks the same windows of all the streams and keeps its own columns.
    data = windows(corpus.train, args.batch, seq_len)
    columns = slice(rank * share, (rank + 1) * share)
    state = model.initial_state(share)
    start, recent, clipped = time.perf_counter(), [], 0
    for step in range(1, args.steps + 1):
        inputs, targets, fresh = next(data)
        if fresh:
            state = model.initial_state(share)

        optimizer.zero_grad()
        loss, cache = model.forward(np.ascontiguousarray(inputs[:, columns]),
                                    np.ascontiguousarray(targets[:, columns]), state)
        grads, _ = model.backward(cache)
        state = cache.state
        for p, g in zip(params, grads.values()):
            p.grad = g
        dist.allreduce_grads_(params, comm=comm)  # the mean over the ranks, in place
        norm = torch_utils.clip_grad_norm_(params, max_norm=args.max_norm)  # same on every rank
        optimizer.step()

        recent.append(loss / seq_len)
        clipped += bool(norm > args.max_norm)
        if step % 100 == 0:
            mean_loss = comm.allreduce(float(np.mean(recent))) / size  # all ranks' streams
            if rank == 0:
                print(f"step {step:5d}  loss {mean_loss:.3f} nats/char  "
                      f"clipped {100 * clipped / step:.0f}% of steps  "
                      f"{time.perf_counter() - start:.1f}s", flush=True)
            recent = []

    # The ranks never diverge: check it once, cheaply, on a hash of the parameters.
    digest = hashlib.sha256(b"".join(p.data.tobytes() for p in params)).hexdigest()
    same = all(d == digest for d in comm.allgather(digest))
    if rank == 0:
        heldout = evaluate(model, corpus.heldout, args.batch)
        print(f"\n{size} rank(s), {share} streams each; parameters identical on every rank: {same}")
        print(f"held-out loss {heldout:.3f} nats/char "
              f"(character frequencies alone: {corpus.unigram_loss:.3f})")


if __name__ == "__main__":
    main()
