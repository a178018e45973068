"""Timing, bandwidth probes, memory measurement and machine description for benchmarks/run.py.

Nothing here knows about gradclip: a case is a set of named zero-argument callables that are
timed round-robin in one process, so that noise from other processes on a shared machine hits
every implementation alike, and the median of each is reported.
"""

from __future__ import annotations

import gc
import os
import platform
import random
import statistics
import time
import tracemalloc
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

# ------------------------------------------------------------------------------------------
# Interleaved timing


@dataclass
class Timing:
    """Seconds per call of one implementation: every sample, and their median."""

    samples: list[float] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.samples)

    @property
    def best(self) -> float:
        return min(self.samples)

    @property
    def spread(self) -> float:
        """Interquartile range relative to the median: how noisy the samples were."""
        if len(self.samples) < 4:
            return float("nan")
        q = statistics.quantiles(self.samples, n=4)
        return (q[2] - q[0]) / self.median


def time_interleaved(
    impls: dict[str, Callable[[], object]],
    setup: Callable[[], None] | None,
    budget: float,
    min_rounds: int,
    max_rounds: int,
    before: dict[str, Callable[[], object]] | None = None,
) -> dict[str, Timing]:
    """Time every implementation once per round, in a random order, until `budget` seconds.

    `setup` runs untimed before every single call (restoring gradients that the previous call
    clipped, say), then `before[name]` if given (the training-loop context: a matmul right
    before the call, whose BLAS or OpenMP threads are still spinning when the call starts).
    Nobody waits for other threads to go idle: that is the situation users are in. One untimed
    warm-up call per implementation comes first. A sample is one call; calls that take
    microseconds get many rounds instead of an inner loop, so that a mutating call can be
    restored before each one.
    """
    names = list(impls)
    timings = {name: Timing() for name in names}
    before = before or {}

    def one(name: str) -> float:
        if setup is not None:
            setup()
        context = before.get(name)
        if context is not None:
            context()
        fn = impls[name]
        t0 = time.perf_counter()
        fn()
        return time.perf_counter() - t0

    gc_was_enabled = gc.isenabled()
    gc.disable()
    try:
        per_round = sum(one(name) for name in names)  # warm-up, also sizes the run
        rounds = int(budget / max(per_round, 1e-9))
        rounds = max(min_rounds, min(max_rounds, rounds))
        # A fresh random order every round: with a fixed rotation each implementation would
        # nearly always follow the same neighbour, and inherit that neighbour's effect on the
        # caches (a NumPy loop's temporaries, say) in every sample.
        rng = random.Random(0)
        order = list(names)
        for _ in range(rounds):
            rng.shuffle(order)
            for name in order:
                timings[name].samples.append(one(name))
    finally:
        if gc_was_enabled:
            gc.enable()
    return timings


def timer_overhead() -> float:
    """Median seconds of timing an empty call, the floor under every sample."""
    samples = []
    nothing = lambda: None  # noqa: E731
    for _ in range(2000):
        t0 = time.perf_counter()
        nothing()
        samples.append(time.perf_counter() - t0)
    return statistics.median(samples)


# ------------------------------------------------------------------------------------------
# Memory


def peak_traced_bytes(fn: Callable[[], object]) -> int:
    """Peak bytes allocated through Python's and NumPy's allocators during fn() (tracemalloc
    sees NumPy array buffers and PyMem allocations, not torch's allocator)."""
    gc.collect(1)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        fn()
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return max(0, peak - base)


def _status_kib(field_name: str) -> int | None:
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(field_name + ":"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def peak_rss_delta(fn: Callable[[], object]) -> int | None:
    """Growth of the resident-set high-water mark during fn(), in bytes, or None where the
    kernel cannot reset the mark (Linux resets it on writing 5 to /proc/self/clear_refs)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        return None
    before = _status_kib("VmRSS")
    fn()
    peak = _status_kib("VmHWM")
    if before is None or peak is None:
        return None
    return max(0, peak - before) * 1024


# ------------------------------------------------------------------------------------------
# Machine


def _cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _cpu_flags() -> list[str]:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                    return [x for x in ("avx2", "fma", "f16c", "avx512f") if x in flags]
    except OSError:
        pass
    return []


def _mem_total_bytes() -> int | None:
    kib = None
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    kib = int(line.split()[1])
    except OSError:
        pass
    return None if kib is None else kib * 1024


def _cache_sizes() -> dict[str, str]:
    out = {}
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for entry in sorted(os.listdir(base)):
            path = os.path.join(base, entry)
            try:
                with open(os.path.join(path, "level")) as f:
                    level = f.read().strip()
                with open(os.path.join(path, "type")) as f:
                    kind = f.read().strip()
                with open(os.path.join(path, "size")) as f:
                    size = f.read().strip()
            except OSError:
                continue
            if kind != "Instruction":
                out[f"L{level}"] = size
    except OSError:
        pass
    return out


def _cpu_busy_fraction(interval: float) -> float | None:
    """Fraction of all CPUs' time spent busy over `interval` seconds (from /proc/stat)."""

    def sample() -> tuple[int, int] | None:
        try:
            with open("/proc/stat") as f:
                fields = [int(x) for x in f.readline().split()[1:]]
        except (OSError, ValueError):
            return None
        idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
        return sum(fields), idle

    a = sample()
    time.sleep(interval)
    b = sample()
    if a is None or b is None or b[0] == a[0]:
        return None
    return 1.0 - (b[1] - a[1]) / (b[0] - a[0])


def wait_for_quiet(max_seconds: float, busy_below: float = 0.25, streak: int = 3) -> float | None:
    """Waits (up to max_seconds) until other processes leave the CPUs mostly idle for `streak`
    consecutive seconds; returns the last busy fraction seen."""
    deadline = time.monotonic() + max_seconds
    quiet = 0
    busy = None
    while time.monotonic() < deadline:
        busy = _cpu_busy_fraction(1.0)
        if busy is None:
            return None
        quiet = quiet + 1 if busy < busy_below else 0
        if quiet >= streak:
            break
    return busy


def load_average() -> tuple[float, float, float] | None:
    try:
        return os.getloadavg()
    except OSError:
        return None


def _git_commit() -> str | None:
    """HEAD of the checkout benchmarked, with '+dirty' when csrc/ or python/ has local edits."""
    import subprocess

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, capture_output=True,
                              text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "csrc", "python", "setup.py"],
                               cwd=root, capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return None
    return head + ("+dirty" if dirty else "")


def machine_info() -> dict[str, object]:
    try:
        import torch
    except ImportError:
        torch = None

    import gradclip

    from gradclip import _C

    env = {k: os.environ[k] for k in sorted(os.environ) if k.startswith(("OPENBLAS_", "OMP_", "MKL_", "GRADCLIP_"))}
    get_threads = getattr(_C, "get_num_threads", None)
    return {
        "cpu": _cpu_model(),
        "cpu_flags": _cpu_flags(),
        "cores": os.cpu_count(),
        "caches": _cache_sizes(),
        "memory_bytes": _mem_total_bytes(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "numpy": np.__version__,
        "torch": torch.__version__ if torch else "not installed",
        "gradclip": gradclip.__version__,
        "gradclip_commit": _git_commit(),
        "gradclip_isa": getattr(_C, "ISA", None),
        "gradclip_threads": get_threads() if get_threads else None,
        "torch_threads": torch.get_num_threads() if torch else None,
        "env": env,
    }
