"""The number of threads gradclip's kernels use on large inputs."""

from . import _C

__all__ = ["get_num_threads", "set_num_threads"]


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
