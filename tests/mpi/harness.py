"""Runs checks under mpiexec: every rank runs every check, in order, then the ranks compare.

Launched by tests/test_distributed.py as ``mpiexec -n N python tests/mpi/<module>.py``. A
check is a function of the communicator; it makes the same collectives on every rank and
collects its mismatches (`Expect`) to assert at the end, so that a failure on one rank
does not leave the others waiting mid-check. After each check the ranks allgather their
outcomes; rank 0 prints PASS/FAIL per check (with every failing rank's traceback), and
every rank exits 1 if any check failed anywhere.
"""

from __future__ import annotations

import os
import sys
import traceback

import numpy as np
from mpi4py import MPI


class Expect:
    """Collects failed expectations; `done` raises them all at once."""

    def __init__(self) -> None:
        self.failures: list[str] = []

    def __call__(self, condition: object, message: str) -> bool:
        if not condition:
            self.failures.append(message)
        return bool(condition)

    def done(self) -> None:
        if self.failures:
            shown = "\n  ".join(self.failures[:20])
            more = f"\n  ... and {len(self.failures) - 20} more" if len(self.failures) > 20 else ""
            raise AssertionError(f"{len(self.failures)} failed expectation(s):\n  {shown}{more}")


def bits(value: object) -> bytes:
    """The exact bytes of a NumPy scalar or array, dtype included."""
    a = np.asarray(value)
    return a.dtype.str.encode() + a.tobytes()


def same_on_all(comm, value: object) -> bool:
    everyone = comm.allgather(bits(value))
    return all(b == everyone[0] for b in everyone)


def outcome(call):
    """(None, result) or ((type name, message), None): what a call did on this rank."""
    try:
        return None, call()
    except Exception as exc:
        return (type(exc).__name__, str(exc)), None


def run(checks) -> None:
    comm = MPI.COMM_WORLD
    expected = os.environ.get("GRADCLIP_MPI_RANKS")
    if expected is not None and int(expected) != comm.Get_size():
        # mpi4py linked against another MPI than this mpiexec: N singletons instead of N ranks.
        print(f"expected {expected} ranks, comm has {comm.Get_size()}: mpiexec and mpi4py "
              "use different MPI libraries", flush=True)
        sys.exit(2)
    only = os.environ.get("GRADCLIP_MPI_ONLY")
    failed = 0
    for check in checks:
        if only and check.__name__ != only:
            continue
        try:
            check(comm)
            status = None
        except Exception:
            status = traceback.format_exc()
        statuses = comm.allgather(status)
        bad = [(rank, s) for rank, s in enumerate(statuses) if s is not None]
        if comm.Get_rank() == 0:
            print(f"{'FAIL' if bad else 'PASS'} {check.__name__} ({comm.Get_size()} ranks)", flush=True)
            for rank, s in bad:
                print(f"--- rank {rank}:\n{s}", flush=True)
        failed += bool(bad)
    if comm.Get_rank() == 0:
        print(f"{failed} check(s) failed" if failed else "all checks passed", flush=True)
    sys.exit(1 if failed else 0)
