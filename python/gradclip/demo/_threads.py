"""Keep NumPy's BLAS on one thread while the demo trains.

The demo's matmuls are small (16 x 128 by 128 x 512 at each time step). Split across
threads they gain little on an idle machine, and when another process holds a core,
OpenBLAS's threads wait for each other: a run then takes five to ten times longer. One
thread also makes a run's numbers independent of the machine's core count (the summation
order changes with the split), which matters for a run as chaotic as the unclipped one.

threadpoolctl is used when installed; otherwise the OpenBLAS bundled with NumPy's wheels
is found and asked directly. If neither works, or the user has chosen a thread count
through the environment, nothing changes.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
from pathlib import Path
from typing import Callable, Iterator

import numpy as np

__all__ = ["single_threaded_blas"]

_ENV_VARS = ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS")


def _bundled_openblas() -> tuple[Callable[[], int], Callable[[int], object]] | None:
    """The (get, set) thread-count functions of the OpenBLAS shipped in NumPy's wheel."""
    root = Path(np.__file__).parent
    # Where auditwheel, delocate and delvewheel put the wheel's shared libraries.
    for d in (root.parent / "numpy.libs", root / ".dylibs"):
        for path in sorted(d.glob("*openblas*")) if d.is_dir() else []:
            try:
                lib = ctypes.CDLL(str(path))
            except OSError:
                continue
            for prefix in ("scipy_openblas", "openblas"):
                for suffix in ("64_", ""):
                    getter = getattr(lib, f"{prefix}_get_num_threads{suffix}", None)
                    setter = getattr(lib, f"{prefix}_set_num_threads{suffix}", None)
                    if getter is not None and setter is not None:
                        getter.restype, setter.argtypes = ctypes.c_int, [ctypes.c_int]
                        return getter, setter
    return None


@contextlib.contextmanager
def single_threaded_blas() -> Iterator[None]:
    """Within the block, BLAS calls use one thread (when that can be arranged)."""
    if any(os.environ.get(name) for name in _ENV_VARS):
        yield
        return
    try:
        from threadpoolctl import threadpool_limits  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        pass
    else:
        with threadpool_limits(limits=1, user_api="blas"):
            yield
        return
    try:
        found = _bundled_openblas()
    except Exception:  # an unusual install: running multithreaded is no error
        found = None
    if found is None:
        yield
        return
    get, set_ = found
    before = get()
    set_(1)
    try:
        yield
    finally:
        set_(before)
