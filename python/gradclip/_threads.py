"""The threads gradclip's kernels use on large inputs, and sharing them with OpenBLAS."""

import ctypes
import os
import warnings

from . import _C

__all__ = ["get_num_threads", "set_num_threads", "share_blas_threads"]


def get_num_threads() -> int:
    """Return the number of threads used for large inputs.

    Defaults to the environment variable ``GRADCLIP_NUM_THREADS`` read at import, else the
    number of online CPUs.
    """
    return _C.get_num_threads()


def set_num_threads(n: int) -> None:
    """Set the number of threads used for large inputs (process-wide, like
    ``torch.set_num_threads``).

    Inputs under about a million elements always run on the calling thread. Every result is
    bit-identical whatever the thread count: reductions are always cut into the same blocks
    and combined in the same order; threads only share out the blocks.

    Parameters
    ----------
    n : int
        Between 1 and 64.
    """
    _C.set_num_threads(n)


# The setter's name in each OpenBLAS build: the plain library, its 64-bit-integer build, and
# the scipy-openblas builds that NumPy and SciPy wheels bundle (prefix scipy_, suffix 64_).
_SETTERS = (
    "openblas_set_threads_callback_function",
    "openblas_set_threads_callback_function64_",
    "scipy_openblas_set_threads_callback_function",
    "scipy_openblas_set_threads_callback_function64_",
)


def _loaded_openblas() -> list[str]:
    """Paths of the OpenBLAS libraries loaded in this process (Linux: /proc/self/maps)."""
    try:
        with open("/proc/self/maps") as maps:
            lines = maps.read().splitlines()
    except OSError:
        return []
    paths = []
    for line in lines:
        fields = line.split(None, 5)  # address perms offset dev inode path (which may hold spaces)
        path = fields[5] if len(fields) == 6 else ""
        name = os.path.basename(path).lower()
        if "openblas" in name and ".so" in name and path not in paths:
            paths.append(path)
    return paths


_hooked: set[str] = set()  # libraries that have been given the callback


def share_blas_threads(enabled: bool = True) -> tuple[str, ...]:
    """Run OpenBLAS's parallel sections (NumPy's matmuls) on gradclip's threads, or on
    OpenBLAS's own again (``enabled=False``).

    A NumPy training loop multiplies matrices right before it clips, and OpenBLAS's worker
    threads keep spinning on their cores for about 0.1 s after every call. The clipping that
    follows then shares a core with a thread doing nothing, and a memory-bound call on two
    cores runs at one core's speed. Shared, the matmul's jobs run on gradclip's worker threads
    (and the calling thread). They too spin ~0.1 s after a job (0.1 ms when not shared), but
    the clipping call takes the spinning worker and so gets every core. The matmul's results
    do not change: OpenBLAS cuts the work as before and each job computes the same part; only
    the thread that runs a job changes.

    Process-wide, for every OpenBLAS loaded in the process (NumPy's, SciPy's) that has
    ``openblas_set_threads_callback_function`` (OpenBLAS 0.3.27 and later, NumPy >= 2.1
    wheels); a loaded OpenBLAS without it keeps its own threads (a ``RuntimeWarning`` names
    it). Shared sections run one at a time.

    Call it while no other thread is calling BLAS (at start-up), and do not run OpenBLAS's LU
    (``np.linalg.solve``, ``inv``, ``det``, ...) in one thread while another calls BLAS:
    OpenBLAS hands LU's parallel work to its own threads directly, and those use the same
    per-thread buffers as the shared sections. One thread calling both is safe.

    Parameters
    ----------
    enabled : bool
        True to share gradclip's threads, False to give OpenBLAS its own threads back.

    Returns
    -------
    tuple of str
        The paths of the libraries whose threading was changed.

    Raises
    ------
    RuntimeError
        If no loaded OpenBLAS has the callback (an older OpenBLAS, another BLAS such as MKL,
        or a platform without ``/proc/self/maps``).
    """
    setters, without = [], []
    for path in _loaded_openblas():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            without.append(path)
            continue
        setter = next((getattr(lib, name) for name in _SETTERS if hasattr(lib, name)), None)
        if setter is None:
            without.append(path)
            continue
        setter.argtypes = [ctypes.c_void_p]
        setter.restype = None
        setters.append((path, setter))
    changed = [path for path, _ in setters]
    if enabled:
        # A library hooked for the first time: register the fork handling again, after that
        # library's own (see csrc/gc_blas.c).
        new = any(path not in _hooked for path in changed)
        callback = ctypes.c_void_p(_C._blas_threads_callback(new))
        _hooked.update(changed)
    else:
        callback = ctypes.c_void_p(None)
    for _, setter in setters:
        setter(callback)
    if changed:
        _C._set_long_spin(enabled)
        if without and enabled:
            warnings.warn(
                "these OpenBLAS libraries have no openblas_set_threads_callback_function and keep "
                f"their own threads: {', '.join(without)}",
                RuntimeWarning,
                stacklevel=2,
            )
    else:
        raise RuntimeError(
            "no OpenBLAS with openblas_set_threads_callback_function (0.3.27 or later) is "
            "loaded in this process; NumPy's BLAS is "
            f"{_blas_name()}"
        )
    return tuple(changed)


def _blas_name() -> str:
    import numpy

    try:
        return str(numpy.show_config(mode="dicts")["Build Dependencies"]["blas"]["name"])
    except Exception:  # noqa: BLE001  (only for the message)
        return "unknown"
