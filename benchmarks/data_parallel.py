"""Step time of data-parallel training over MPI against the single-process loop.

    python benchmarks/data_parallel.py              # interleaved rounds, Markdown table
    python benchmarks/data_parallel.py --rounds 9 --steps 80

The workload is the demo's: the character LSTM (hidden 128, float32), 16 streams of 25
characters per step, SGD at lr=1.0 with clip_grad_norm_(max_norm=5). Three configurations,
each in its own process(es), run in a fresh random order every round:

* ``single``: the plain loop, no MPI at all (the whole batch in one process);
* ``1 rank``: ``mpiexec -n 1``, with ``allreduce_grads_`` (which only agrees, then returns);
* ``2 ranks``: ``mpiexec -n 2``, 8 streams per rank, gradients averaged by ``allreduce_grads_``.

Each run times every step after a warm-up and reports its median; the table shows the
median over rounds of those medians, and the range. It also counts, through a communicator
subclass, the collectives and bytes that one step's ``allreduce_grads_`` makes.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

BATCH, SEQ_LEN, HIDDEN, MAX_NORM = 16, 25, 128, 5.0


def _loop(comm, steps: int, warmup: int) -> dict:
    import numpy as np

    import gradclip
    import gradclip.optim as optim
    from gradclip.demo.data import Corpus, load_text, windows
    from gradclip.demo.models import CharLSTM

    rank, size = (0, 1) if comm is None else (comm.Get_rank(), comm.Get_size())
    share = BATCH // size
    corpus = Corpus.from_text(load_text())
    model = CharLSTM(corpus.vocab_size, HIDDEN, rng=np.random.default_rng(0))
    params = model.parameters()
    optimizer = optim.SGD(params, lr=1.0)
    data = windows(corpus.train, BATCH, SEQ_LEN)
    state = model.initial_state(share)
    columns = slice(rank * share, (rank + 1) * share)
    if comm is not None:
        import gradclip.distributed as dist
    step_times, comm_times = [], []
    with np.errstate(over="ignore", invalid="ignore"):
        for step in range(warmup + steps):
            if comm is not None:
                comm.Barrier()  # every rank starts the step together
            t0 = time.perf_counter()
            inputs, targets, fresh = next(data)
            if fresh:
                state = model.initial_state(share)
            loss, cache = model.forward(np.ascontiguousarray(inputs[:, columns]),
                                        np.ascontiguousarray(targets[:, columns]), state)
            grads, _ = model.backward(cache)
            state = cache.state
            for p, g in zip(params, grads.values()):
                p.grad = g
            t1 = time.perf_counter()
            if comm is not None:
                dist.allreduce_grads_(params, comm=comm)
            t2 = time.perf_counter()
            gradclip.clip_grad_norm_(params, MAX_NORM)
            optimizer.step()
            t3 = time.perf_counter()
            if step >= warmup:
                step_times.append(t3 - t0)
                comm_times.append(t2 - t1)
    grad_bytes = sum(p.data.nbytes for p in params)
    return {"step": statistics.median(step_times), "allreduce": statistics.median(comm_times),
            "grad_bytes": grad_bytes, "arrays": len(params)}


def _count(comm) -> dict:
    """Collectives and bytes sent by this rank in one allreduce_grads_ of the model's grads."""
    import numpy as np
    from mpi4py import MPI

    import gradclip.distributed as dist
    from gradclip.demo.data import Corpus, load_text
    from gradclip.demo.models import CharLSTM

    calls: list[tuple[str, int]] = []

    def nbytes(spec) -> int:
        if spec is MPI.IN_PLACE:
            return 0
        if isinstance(spec, np.ndarray):
            return spec.nbytes
        buf, layout = spec[0], spec[1]
        if isinstance(layout, tuple):  # (counts, displacements) in bytes (MPI.BYTE)
            return sum(layout[0]) - (layout[0][comm.Get_rank()] if len(layout[0]) == comm.Get_size() else 0)
        return buf.nbytes

    class Counting(MPI.Intracomm):
        def Allgather(self, sendbuf, recvbuf):
            calls.append(("Allgather", nbytes(sendbuf) * (self.Get_size() - 1)))
            return super().Allgather(sendbuf, recvbuf)

        def Alltoallv(self, sendbuf, recvbuf):
            calls.append(("Alltoallv", nbytes(sendbuf)))
            return super().Alltoallv(sendbuf, recvbuf)

        def Allgatherv(self, sendbuf, recvbuf):
            counts = recvbuf[1][0]
            calls.append(("Allgatherv", counts[self.Get_rank()] * (self.Get_size() - 1)))
            return super().Allgatherv(sendbuf, recvbuf)

    counting = Counting(comm)
    corpus = Corpus.from_text(load_text())
    model = CharLSTM(corpus.vocab_size, HIDDEN, rng=np.random.default_rng(0))
    params = model.parameters()
    for p in params:
        p.grad = np.ones_like(p.data)
    dist.allreduce_grads_(params, comm=counting)
    # The call alone, every rank entering together (in the training loop it also absorbs the
    # wait for the slower rank's forward/backward).
    alone = []
    for _ in range(50):
        comm.Barrier()
        t0 = time.perf_counter()
        dist.allreduce_grads_(params, comm=comm)
        alone.append(time.perf_counter() - t0)
    return {"calls": calls, "allreduce_alone": statistics.median(alone)}


def _worker(args) -> None:
    comm = None
    if args.mode == "mpi":
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    result = _loop(comm, args.steps, args.warmup)
    if comm is not None:
        result.update(_count(comm))
    if comm is None or comm.Get_rank() == 0:
        print("RESULT " + json.dumps(result), flush=True)


def _run(config: str, args) -> dict:
    here = Path(__file__).resolve()
    env = dict(os.environ, OPENBLAS_NUM_THREADS="1", GRADCLIP_NUM_THREADS="1")
    worker = [sys.executable, str(here), "--worker", "--steps", str(args.steps), "--warmup", str(args.warmup)]
    if config == "single":
        command = worker + ["--mode", "single"]
    else:
        mpiexec = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
        command = [mpiexec, "-n", config.split()[0]] + worker + ["--mode", "mpi"]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, check=True).stdout
    line = next(line for line in out.splitlines() if line.startswith("RESULT "))
    return json.loads(line[len("RESULT "):])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--warmup", type=int, default=10)
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--mode", choices=["single", "mpi"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args)
        return

    configs = ["single", "1 rank", "2 ranks"]
    results: dict[str, list[dict]] = {c: [] for c in configs}
    rng = random.Random(0)
    for r in range(args.rounds):
        order = configs[:]
        rng.shuffle(order)
        for config in order:
            results[config].append(_run(config, args))
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(
            f"{c} {results[c][-1]['step'] * 1e3:.1f} ms" for c in configs), file=sys.stderr, flush=True)

    import numpy
    from mpi4py import MPI

    print(f"\n{os.cpu_count()} CPUs, Python {sys.version.split()[0]}, NumPy {numpy.__version__}, "
          f"{MPI.Get_library_version().splitlines()[0].strip()}; {args.rounds} interleaved rounds, "
          f"median of {args.steps} steps each\n")
    single = statistics.median(r["step"] for r in results["single"])
    print("| configuration | streams per process | step time (median, range over rounds) | "
          "of which in allreduce_grads_ | allreduce_grads_ alone | single-process time / this |")
    print("| --- | --- | --- | --- | --- | --- |")
    for config in configs:
        steps = [r["step"] for r in results[config]]
        comm_t = statistics.median(r["allreduce"] for r in results[config])
        alone = "—" if config == "single" else \
            f"{statistics.median(r['allreduce_alone'] for r in results[config]) * 1e3:.2f} ms"
        ranks = 1 if config == "single" else int(config.split()[0])
        med = statistics.median(steps)
        print(f"| {config} | {BATCH // ranks} | {med * 1e3:.1f} ms ({min(steps) * 1e3:.1f}–{max(steps) * 1e3:.1f}) | "
              f"{'—' if config == 'single' else f'{comm_t * 1e3:.2f} ms'} | {alone} | {single / med:.2f}× |")
    last = results["2 ranks"][-1]
    print(f"\ngradients: {last['arrays']} arrays, {last['grad_bytes']:,} bytes; one allreduce_grads_ "
          "on 2 ranks, per rank: " + ", ".join(f"{name} ({sent:,} B sent)" for name, sent in last["calls"]))
    print("\nthe \"in allreduce_grads_\" column includes waiting for the slower rank; \"alone\" is "
          "the call with both ranks entering together (median of 50, after a barrier)")


if __name__ == "__main__":
    main()
