"""The streaming limit for benchmarks/run.py: stream_probe.c, built here and called via ctypes.

The limit of an operation is the bytes it must move divided by what the hardware streams, and
that is measured by loops written to stream (every core, vectorised, best of several runs), not
by a library call that is itself slower than the memory system. A row's probes run inside that
row's rounds, on the row's own byte counts, so they meet the same background load.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import subprocess
import sysconfig
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SOURCE = HERE / "stream_probe.c"


def _compiler() -> list[str]:
    cc = os.environ.get("CC") or (sysconfig.get_config_var("CC") or "cc").split()[0]
    return [cc]


def build(cache_dir: Path | None = None) -> ctypes.CDLL:
    """Compiles stream_probe.c (once per source and compiler) and loads it."""
    text = SOURCE.read_bytes()
    flags = ["-O3", "-march=native", "-fopenmp", "-shared", "-fPIC"]
    key = hashlib.sha256(text + " ".join(_compiler() + flags).encode()).hexdigest()[:16]
    cache = cache_dir or HERE / "results" / ".probe"
    cache.mkdir(parents=True, exist_ok=True)
    lib = cache / f"stream_probe-{key}.so"
    if not lib.exists():
        tmp = lib.with_suffix(f".{os.getpid()}.tmp")
        subprocess.run([*_compiler(), *flags, str(SOURCE), "-o", str(tmp)], check=True, capture_output=True)
        os.replace(tmp, lib)
    # The probe's OpenMP workers must not spin after it returns, into the next sample: this
    # setting is read when this copy of libgomp loads (torch's own copy is not affected).
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    dll = ctypes.CDLL(str(lib))
    dll.probe_read.restype = ctypes.c_double
    dll.probe_read.argtypes = [ctypes.c_void_p, ctypes.c_long]
    dll.probe_rw.restype = None
    dll.probe_rw.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_float]
    dll.probe_threads.restype = ctypes.c_int
    dll.probe_read_best.restype = ctypes.c_double
    dll.probe_read_best.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_int, ctypes.c_int, ctypes.c_int]
    dll.probe_rw_best.restype = ctypes.c_double
    dll.probe_rw_best.argtypes = [ctypes.c_void_p, ctypes.c_long, ctypes.c_double, ctypes.c_int, ctypes.c_int,
                                  ctypes.c_int]
    return dll


class StreamProbe:
    """Streaming read and in-place read+write over a buffer far larger than the caches.

    ``read(nbytes)`` reads nbytes; ``rw(nbytes)`` moves nbytes counting reads plus writes
    (nbytes / 2 updated in place). A request larger than the buffer is served in passes.
    """

    def __init__(self, nbytes: int, kind: str = "memory", float64: bool = False) -> None:
        self.lib = build()
        self.threads = self.lib.probe_threads()
        self.kind = kind  # "memory" (far larger than the caches) or "cache" (a row's own size)
        self.nbytes = nbytes
        self.buf = np.ones(max(1, nbytes // 4), dtype=np.float32)
        self._ptr = self.buf.ctypes.data
        # kind "cache": the best single pass of each probe, timed inside C (see pass_bests), on
        # the row's element type (float64 takes half the conversions and additions per byte)
        self.float64 = float64
        self._pass_best: dict[str, float] = {}

    def _passes(self, nbytes: int):
        n = max(1, nbytes // 4)
        while n > 0:
            k = min(n, self.buf.size)
            yield k
            n -= k

    def read(self, nbytes: int) -> None:
        for k in self._passes(nbytes):
            self.lib.probe_read(self._ptr, k)

    def rw(self, nbytes: int) -> None:
        for k in self._passes(nbytes // 2):
            self.lib.probe_rw(self._ptr, k, 1.0)

    # Passes per probe call on a cache-sized buffer, for each of one thread and every core.
    CACHE_PASSES = 20

    def kernels(self, read_bytes: int, rw_bytes: int) -> dict[str, Callable[[], None]]:
        """The probes to interleave with a row that reads `read_bytes` and updates `rw_bytes`
        (reads plus writes) in place. For kind "cache" each call runs CACHE_PASSES passes on
        one thread and as many on every core, timed in C, and keeps the best pass
        (pass_bests): at a few hundred kB the time of the call around the loop is not the
        hardware's."""
        out: dict[str, Callable[[], None]] = {}
        if self.kind == "cache":
            if read_bytes:
                out["limit read"] = lambda: self._best("limit read", self.lib.probe_read_best, read_bytes)
            if rw_bytes:
                out["limit rw"] = lambda: self._best("limit rw", self.lib.probe_rw_best, rw_bytes // 2, 1.0)
            return out
        if read_bytes:
            out["limit read"] = lambda: self.read(read_bytes)
        if rw_bytes:
            out["limit rw"] = lambda: self.rw(rw_bytes)
        return out

    def _best(self, name: str, fn: Callable[..., float], nbytes: int, *args: float) -> None:
        nbytes = max(8, min(nbytes, self.buf.nbytes))
        for all_threads in (0, 1):
            t = fn(self._ptr, nbytes, *args, self.CACHE_PASSES, all_threads, int(self.float64))
            key = f"{name} {'all cores' if all_threads else 'one core'}"
            self._pass_best[key] = min(t, self._pass_best.get(key, float("inf")))

    def pass_bests(self) -> dict[str, float]:
        """kind "cache": the best pass of each probe so far, one core or every core, whichever
        was faster ("limit read" / "limit rw"), with each mode's own best beside it."""
        out = dict(self._pass_best)
        for name in ("limit read", "limit rw"):
            modes = [t for key, t in self._pass_best.items() if key.startswith(name + " ")]
            if modes:
                out[name] = min(modes)
        return out

    def measure(self, reps: int) -> dict[str, float]:
        """Best bytes per second of each probe over the whole buffer, in `reps` runs."""
        out = {"threads": self.threads, "buffer_bytes": self.nbytes}
        for name, fn, nbytes in (("read_Bps", self.read, self.nbytes), ("rw_Bps", self.rw, 2 * self.nbytes)):
            best = float("inf")
            for _ in range(reps):
                t0 = time.perf_counter()
                fn(nbytes)
                best = min(best, time.perf_counter() - t0)
            out[name] = nbytes / best
        return out

    @staticmethod
    def limit(best: dict[str, float]) -> float:
        """The row's limit in seconds: the best (fastest) run of each probe, added."""
        return sum(best.get(k, 0.0) for k in ("limit read", "limit rw"))
