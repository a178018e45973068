"""gradclip.distributed on 1, 2 and 3 MPI ranks: tests/mpi/*.py launched through mpiexec.

Each MPI module runs its checks on every rank and prints PASS/FAIL per check (see
tests/mpi/harness.py); a run that hangs is killed after a timeout and fails. The tests need
mpi4py and an MPI with ``mpiexec`` (``pip install ".[mpi]"``: the MPICH wheel puts one next
to the interpreter); without them they skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

import gradclip
import gradclip.optim

MPI_DIR = Path(__file__).parent / "mpi"
TIMEOUT = 240  # seconds per mpiexec run; the machine may be shared and busy
RANKS = (1, 2, 3)


def _find_mpiexec() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    here = os.path.dirname(sys.executable)  # the venv's bin/, where the MPICH wheel puts it
    return shutil.which("mpiexec", path=here + os.pathsep + os.environ.get("PATH", ""))


MPIEXEC = _find_mpiexec()
needs_mpi = pytest.mark.skipif(
    MPIEXEC is None and os.environ.get("CI") != "true",
    reason='mpi4py and mpiexec are not installed (pip install ".[mpi]")',
)


def _env(ranks: int) -> dict[str, str]:
    env = dict(os.environ)
    # The subprocesses import the gradclip this test imported (an installed package or a
    # source tree on PYTHONPATH).
    package_root = str(Path(gradclip.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env["GRADCLIP_MPI_RANKS"] = str(ranks)
    # Up to three ranks on a two-core machine: one BLAS and one kernel thread each.
    env["OPENBLAS_NUM_THREADS"] = env["OMP_NUM_THREADS"] = "1"
    env["GRADCLIP_NUM_THREADS"] = "1"
    return env


def _mpirun(ranks: int, script: Path, *args: str) -> str:
    if MPIEXEC is None:
        pytest.fail("mpi4py and mpiexec must be installed under CI (they are in the test extra)")
    command = [MPIEXEC, "-n", str(ranks), sys.executable, str(script), *args]
    # Own session, so that a hung run's whole process tree can be killed.
    proc = subprocess.Popen(command, env=_env(ranks), stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
    try:
        output, _ = proc.communicate(timeout=TIMEOUT)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
        pytest.fail(f"{' '.join(command)} did not finish in {TIMEOUT} s (a hang?):\n{output[-5000:]}")
    if proc.returncode != 0:
        pytest.fail(f"{' '.join(command)} exited with {proc.returncode}:\n{output[-10000:]}")
    return output


@needs_mpi
@pytest.mark.parametrize("ranks", RANKS)
@pytest.mark.parametrize("module", ["norms", "data_parallel"])
def test_mpi_checks(module, ranks):
    output = _mpirun(ranks, MPI_DIR / f"{module}.py")
    assert "all checks passed" in output, output
    assert "FAIL" not in output, output


@pytest.fixture(scope="module")
def training_module():
    sys.path.insert(0, str(MPI_DIR))
    try:
        import training
    finally:
        sys.path.remove(str(MPI_DIR))
    return training


@needs_mpi
@pytest.mark.parametrize("ranks", RANKS)
def test_data_parallel_training(ranks, tmp_path, training_module):
    """The demo's LSTM, batch/N streams per rank, averaged by allreduce_grads_, clipped,
    50 SGD steps: bit-identical to one process that averages the N shares' gradients in
    rank order; close to the whole-batch run (see the tolerances below)."""
    training = training_module
    out = tmp_path / "params.npz"
    _mpirun(ranks, MPI_DIR / "training.py", str(out))
    got = np.load(out)
    for dtype in training.DTYPES:
        name = np.dtype(dtype).name
        params = lambda: [got[f"{name}_{i}"] for i in range(5)]  # noqa: E731
        fixed_params, fixed_norms = training.reference(ranks, dtype)
        assert len(fixed_params) == 5
        for i, (p, r) in enumerate(zip(params(), fixed_params)):
            assert p.dtype == r.dtype and p.tobytes() == r.tobytes(), f"{name} parameter {i}"
        np.testing.assert_array_equal(got[f"{name}_norms"], fixed_norms)

        whole_params, whole_norms = training.reference(1, dtype)
        if ranks == 1:  # the plain single-process loop
            for p, r in zip(params(), whole_params):
                assert p.tobytes() == r.tobytes()
            continue
        # The whole batch's matmuls sum over all streams at once, the shares over theirs:
        # the first step's averaged gradient differs from the whole-batch one by rounding
        # only (a few ulps), and SGD at lr=1.0 then amplifies the difference ~10x every 10
        # steps. float64 stays close after 50 steps; float32 is compared at step 1.
        assert np.isclose(got[f"{name}_norms"][0], whole_norms[0], rtol=1e-6 if name == "float32" else 1e-13)
        if name == "float64":
            for p, r in zip(params(), whole_params):
                assert np.max(np.abs(p - r)) <= 1e-8 * np.max(np.abs(r))


@needs_mpi
def test_example_data_parallel():
    example = Path(__file__).resolve().parent.parent / "examples" / "data_parallel.py"
    if not example.exists():
        pytest.skip("examples/ is not next to the tests")
    output = _mpirun(2, example, "--steps", "20")
    assert "2 rank(s), 8 streams each; parameters identical on every rank: True" in output, output


def test_import_gradclip_does_not_import_mpi():
    """`import gradclip` and the optimizers' non-distributed clip_and_step never import
    mpi4py or gradclip.distributed."""
    code = textwrap.dedent("""
        import sys
        import numpy as np
        import gradclip, gradclip.optim, gradclip.nn.utils
        p = gradclip.Parameter(np.ones(3))
        p.grad = np.ones(3)
        gradclip.optim.SGD([p], lr=0.1).clip_and_step(1.0)
        gradclip.clip_grad_norm_([p], 1.0)
        bad = sorted(m for m in sys.modules if m.startswith("mpi4py") or m == "gradclip.distributed")
        assert not bad, bad
        print("ok")
    """)
    env = dict(os.environ)
    package_root = str(Path(gradclip.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "ok" in result.stdout, result.stderr


def test_distributed_without_mpi4py_says_what_to_install():
    code = textwrap.dedent("""
        import sys
        sys.modules["mpi4py"] = None  # as if not installed
        try:
            import gradclip.distributed
        except ImportError as exc:
            print(exc)
    """)
    env = dict(os.environ)
    package_root = str(Path(gradclip.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert 'pip install "gradclip[mpi]"' in result.stdout, result.stdout + result.stderr


def test_clip_and_step_sharded_needs_comm():
    p = gradclip.Parameter(np.ones(3))
    p.grad = np.ones(3)
    with pytest.raises(ValueError, match="sharded=True needs comm"):
        gradclip.optim.SGD([p], lr=0.1).clip_and_step(1.0, sharded=True)
    np.testing.assert_array_equal(p.data, np.ones(3))
