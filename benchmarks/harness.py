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
import threading
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


def _running_threads() -> int | None:
    """How many threads of this process other than the calling one are on a CPU (Linux)."""
    me = str(threading.get_native_id())
    try:
        tasks = os.listdir("/proc/self/task")
    except OSError:
        return None
    running = 0
    for tid in tasks:
        if tid == me:
            continue
        try:
            with open(f"/proc/self/task/{tid}/stat", "rb") as f:
                # The state follows the parenthesised name, which may itself hold spaces.
                state = f.read().rsplit(b")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        running += state == b"R"
    return running


def settle(max_wait: float = 0.25) -> None:
    """Wait (up to `max_wait` s) until no other thread of this process is running.

    After a parallel call, torch's OpenMP workers and OpenBLAS's threads spin for a while
    (milliseconds to ~100 ms) before they sleep; a 2-thread call that starts meanwhile shares
    its cores with them and is timed at up to half speed. Waiting for them to sleep before
    every sample gives each implementation the machine it would have on its own.
    """
    deadline = time.perf_counter() + max_wait
    while time.perf_counter() < deadline:
        busy = _running_threads()
        if not busy:
            return
        time.sleep(0.001)


def time_interleaved(
    impls: dict[str, Callable[[], object]],
    setup: Callable[[], None] | None,
    budget: float,
    min_rounds: int,
    max_rounds: int,
    settle_threads: bool = False,
) -> dict[str, Timing]:
    """Time every implementation once per round, in a random order, until `budget` seconds.

    `setup` runs untimed before every single call (restoring gradients that the previous call
    clipped, say). One untimed warm-up call per implementation comes first. A sample is one
    call; calls that take microseconds get many rounds instead of an inner loop, so that a
    mutating call can be restored before each one. With `settle_threads`, every call first
    waits for the process's other threads to go idle (see :func:`settle`).
    """
    names = list(impls)
    timings = {name: Timing() for name in names}

    def one(name: str) -> float:
        if setup is not None:
            setup()
        if settle_threads:
            settle()
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
# Streaming-bandwidth probes


class BandwidthProbe:
    """Streaming read and in-place read+write kernels on a buffer much larger than the caches.

    read   : np.add.reduce over a float64 view, reading every byte once (no writes).
    rw     : np.multiply(x, 1.0, out=x), reading and writing every byte in place, which is the
             access pattern of in-place scaling and of an optimizer's state updates. Its bytes
             count reads plus writes.
    read_mt, rw_mt : the same with torch (x.sum(), x.mul_(1.0)) on torch's thread count, since
             on some machines one core cannot saturate the memory system.
    copy   : np.copyto between two buffers (reported only; not used by the model).

    The same kernels are re-run inside every streaming case's rounds on the case's own byte
    counts, so a case's roofline is measured under the same background load as the case.
    """

    def __init__(self, nbytes: int) -> None:
        import torch

        self.nbytes = nbytes
        self.buf = np.ones(nbytes // 8, dtype=np.float64)
        self.tbuf = torch.from_numpy(self.buf)
        self.threads = torch.get_num_threads()

    def _chunks(self, nbytes: int):
        n = max(1, nbytes // 8)
        while n > 0:
            k = min(n, self.buf.size)
            yield k
            n -= k

    def read(self, nbytes: int) -> None:
        for k in self._chunks(nbytes):
            np.add.reduce(self.buf[:k])

    def rw(self, nbytes: int) -> None:
        """Moves `nbytes` counting reads and writes, i.e. nbytes / 2 updated in place."""
        for k in self._chunks(nbytes // 2):
            np.multiply(self.buf[:k], 1.0, out=self.buf[:k])

    def read_mt(self, nbytes: int) -> None:
        for k in self._chunks(nbytes):
            self.tbuf[:k].sum()

    def rw_mt(self, nbytes: int) -> None:
        for k in self._chunks(nbytes // 2):
            self.tbuf[:k].mul_(1.0)

    def kernels(self, read_bytes: int, rw_bytes: int) -> dict[str, Callable[[], None]]:
        """The probes to interleave with a case that reads `read_bytes` and updates
        `rw_bytes` (reads plus writes) in place."""
        out: dict[str, Callable[[], None]] = {}
        if read_bytes:
            out["roofline read"] = lambda: self.read(read_bytes)
            if self.threads > 1:
                out["roofline read mt"] = lambda: self.read_mt(read_bytes)
        if rw_bytes:
            out["roofline rw"] = lambda: self.rw(rw_bytes)
            if self.threads > 1:
                out["roofline rw mt"] = lambda: self.rw_mt(rw_bytes)
        return out

    @staticmethod
    def roofline(medians: dict[str, float]) -> float:
        """Roofline seconds from the probes' medians: the faster of the single- and the
        multi-threaded probe for each kind of traffic (both are achievable bandwidths)."""
        total = 0.0
        for kind in ("read", "rw"):
            times = [medians[k] for k in (f"roofline {kind}", f"roofline {kind} mt") if k in medians]
            if times:
                total += min(times)
        return total

    def measure(self, reps: int) -> dict[str, float]:
        """Bytes per second of each kernel over the whole buffer (median of `reps`)."""
        n = self.nbytes
        dst = np.empty_like(self.buf)
        impls = {**self.kernels(n, 2 * n), "copy": lambda: np.copyto(dst, self.buf)}
        t = time_interleaved(impls, None, budget=0.0, min_rounds=reps, max_rounds=reps)
        out = {
            "read_Bps": n / t["roofline read"].median,
            "rw_Bps": 2 * n / t["roofline rw"].median,
            "copy_Bps": 2 * n / t["copy"].median,
            "threads_mt": self.threads,
        }
        if "roofline read mt" in t:
            out["read_mt_Bps"] = n / t["roofline read mt"].median
            out["rw_mt_Bps"] = 2 * n / t["roofline rw mt"].median
        return out


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
    import torch

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
        "torch": torch.__version__,
        "gradclip": gradclip.__version__,
        "gradclip_commit": _git_commit(),
        "gradclip_isa": getattr(_C, "ISA", None),
        "gradclip_threads": get_threads() if get_threads else None,
        "torch_threads": torch.get_num_threads(),
        "env": env,
    }
