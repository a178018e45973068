"""gradclip.share_blas_threads: OpenBLAS's parallel sections on gradclip's threads.

* Where the loaded OpenBLAS has ``openblas_set_threads_callback_function`` (NumPy's wheels
  since 2.1): every BLAS result is bit-identical with and without sharing (matrix products of
  every dtype and of sizes OpenBLAS threads and does not, matrix-vector products, dot), the
  jobs really run on gradclip's threads, and turning it off gives OpenBLAS its threads back.
* Python threads calling BLAS and gradclip at once (the pool then busy: BLAS sections start
  threads of their own) get correct results and finish; so does a forked child. LAPACK
  (which calls BLAS, and for LU OpenBLAS's own threads too) from one thread: bit-identical.
* Where no OpenBLAS has the callback (the oldest-NumPy CI job): a RuntimeError that says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

import gradclip
from gradclip import _threads


def _available() -> bool:
    try:
        gradclip.share_blas_threads(False)
    except RuntimeError:
        return False
    return True


AVAILABLE = _available()
needs_callback = pytest.mark.skipif(not AVAILABLE, reason="no loaded OpenBLAS has the threads callback "
                                    "(test_unavailable_raises checks the error instead)")


@pytest.fixture
def shared():
    """Sharing on for the test, and OpenBLAS's own threads back afterwards, whatever happens."""
    paths = gradclip.share_blas_threads(True)
    try:
        yield paths
    finally:
        gradclip.share_blas_threads(False)


def _libm():
    """A loaded library that is not OpenBLAS, to stand in for one without the hook."""
    for path in ("/lib/x86_64-linux-gnu/libm.so.6", "/usr/lib64/libm.so.6", "/lib64/libm.so.6"):
        if os.path.exists(path):
            return path
    pytest.skip("no libm at a known path")


def _operands(rng, dtype, shape):
    x = rng.standard_normal(shape)
    if np.issubdtype(dtype, np.complexfloating):
        x = x + 1j * rng.standard_normal(shape)
    return x.astype(dtype)


# (m, k, n): below OpenBLAS's threading threshold, above it, odd sizes, a matrix-vector product.
PRODUCTS = [(8, 8, 8), (64, 64, 64), (257, 333, 129), (256, 1024, 512), (1, 4096, 1024), (2048, 2048, 1)]
DTYPES = [np.float32, np.float64, np.complex64, np.complex128]


@needs_callback
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
@pytest.mark.parametrize("mkn", PRODUCTS, ids=lambda s: "x".join(map(str, s)))
def test_products_bit_identical(dtype, mkn):
    m, k, n = mkn
    rng = np.random.default_rng(m * 7 + k * 3 + n)
    a, b = _operands(rng, dtype, (m, k)), _operands(rng, dtype, (k, n))
    own = a @ b
    gradclip.share_blas_threads(True)
    try:
        on_ours = a @ b
        transposed = b.T @ a.T
    finally:
        gradclip.share_blas_threads(False)
    assert on_ours.tobytes() == own.tobytes()
    assert transposed.tobytes() == (b.T @ a.T).tobytes()


@needs_callback
@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: np.dtype(d).name)
def test_dot_and_vdot_bit_identical(dtype):
    rng = np.random.default_rng(5)
    x, y = _operands(rng, dtype, 1 << 22), _operands(rng, dtype, 1 << 22)  # threaded in OpenBLAS
    own = (np.dot(x, y), np.vdot(x, y))
    gradclip.share_blas_threads(True)
    try:
        on_ours = (np.dot(x, y), np.vdot(x, y))
    finally:
        gradclip.share_blas_threads(False)
    assert [v.tobytes() for v in on_ours] == [np.asarray(v).tobytes() for v in own]


@needs_callback
def test_returns_numpys_openblas(shared):
    assert shared and all("openblas" in os.path.basename(p).lower() for p in shared)
    assert all(os.path.exists(p) for p in shared)


@needs_callback
def test_jobs_run_on_gradclips_threads():
    """OpenBLAS starts its server thread at import and reuses it; gradclip's pool starts its
    worker on first use. Threaded products with sharing on add exactly that worker (without
    sharing they add no thread). In a fresh process, whose threads are its own."""
    script = textwrap.dedent("""
        import os, numpy as np, gradclip
        import sys
        if sys.argv[1] == "1":
            gradclip.share_blas_threads(True)
        def count():
            return len(os.listdir("/proc/self/task"))
        a = np.ones((512, 512), np.float32)
        before = count()
        for _ in range(20):
            r = a @ a
        assert (r == 512).all()
        during = count()
        print(before, during)
    """)
    added = {}
    for share in ("0", "1"):
        out = subprocess.run([sys.executable, "-c", script, share], capture_output=True, text=True, timeout=120,
                             env=dict(os.environ, OPENBLAS_NUM_THREADS="2", GRADCLIP_NUM_THREADS="2"))
        assert out.returncode == 0, out.stderr
        before, during = map(int, out.stdout.split())
        added[share] = during - before
    assert added == {"0": 0, "1": 1}


@needs_callback
def test_threads_calling_blas_and_gradclip_at_once(shared):
    """Four Python threads multiply matrices while the main thread clips a list large enough to
    use the pool: every product equals the one computed before, and every clip the reference."""
    rng = np.random.default_rng(11)
    mats = [rng.standard_normal((300, 400)).astype(np.float32) for _ in range(4)]
    wanted = [m @ m.T for m in mats]
    grads = [rng.standard_normal(1 << 21).astype(np.float32) for _ in range(2)]
    norm = float(np.sqrt(sum(np.vdot(g.astype(np.float64), g.astype(np.float64)) for g in grads)))
    errors = []

    def multiply(i):
        try:
            for _ in range(30):
                if not np.array_equal(mats[i] @ mats[i].T, wanted[i]):
                    errors.append(f"thread {i}: product changed")
                    return
        except Exception as e:  # noqa: BLE001
            errors.append(repr(e))

    threads = [threading.Thread(target=multiply, args=(i,), daemon=True) for i in range(4)]
    for t in threads:
        t.start()
    totals = [float(gradclip.get_total_norm(grads)) for _ in range(30)]
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "a BLAS call did not finish"
    assert errors == []
    assert all(abs(total - norm) <= 1e-6 * norm for total in totals)


@needs_callback
def test_forked_child_multiplies():
    script = textwrap.dedent("""
        import os, numpy as np, gradclip
        gradclip.share_blas_threads(True)
        a = np.arange(512 * 512, dtype=np.float64).reshape(512, 512) % 7
        want = a @ a
        gradclip.get_total_norm([np.ones(1 << 21, np.float32)])  # the pool has a worker
        pid = os.fork()
        if pid == 0:
            if not np.array_equal(a @ a, want):
                os._exit(3)
            norm = gradclip.get_total_norm([np.ones(1 << 21, np.float32)])
            os._exit(0 if norm == np.float32(2.0 ** 10.5) else 4)
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
        assert np.array_equal(a @ a, want)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


# For the scripts run in fresh processes: their threads, and each thread's time on a CPU (ns).
PROC_HELPERS = textwrap.dedent("""
    import os
    def tasks():
        return set(os.listdir("/proc/self/task"))
    def on_cpu_ns(tid):
        with open(f"/proc/self/task/{tid}/schedstat") as f:
            return int(f.read().split()[0])
""")


OFF_SCRIPT = PROC_HELPERS + textwrap.dedent("""
    import time, numpy as np, gradclip
    a = np.ones((512, 512), np.float32)
    a @ a  # OpenBLAS's server thread exists from import; this wakes it once
    openblas_threads = tasks() - {str(os.getpid())}
    gradclip.share_blas_threads(True)
    a @ a
    (ours,) = tasks() - openblas_threads - {str(os.getpid())}
    gradclip.share_blas_threads(False)
    assert gradclip.share_blas_threads(False)  # idempotent
    time.sleep(0.3)  # gradclip's worker stops spinning, OpenBLAS's have been asleep
    before = {tid: on_cpu_ns(tid) for tid in openblas_threads | {ours}}
    for _ in range(20):
        assert (a @ a == 512).all()
    after = {tid: on_cpu_ns(tid) for tid in before}
    print(after[ours] - before[ours], max(after[t] - before[t] for t in openblas_threads))
""")


@needs_callback
def test_off_gives_openblas_its_threads_back():
    """After share_blas_threads(False), products run on OpenBLAS's server thread again and
    gradclip's worker gets no more of them (time on a CPU from /proc, in a fresh process)."""
    out = subprocess.run([sys.executable, "-c", OFF_SCRIPT], capture_output=True, text=True, timeout=120,
                         env=dict(os.environ, OPENBLAS_NUM_THREADS="2", GRADCLIP_NUM_THREADS="2"))
    assert out.returncode == 0, out.stderr
    ours_ns, openblas_ns = map(int, out.stdout.split())
    # A product's job on gradclip's worker would take milliseconds; a worker scheduled once
    # more at the end of its spin takes microseconds.
    assert ours_ns < 200_000 and openblas_ns > 1_000_000, (ours_ns, openblas_ns)


@needs_callback
@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.complex128], ids=lambda d: np.dtype(d).name)
def test_lapack_bit_identical(dtype):
    """LAPACK calls BLAS (shared) and, for LU, its own threads directly: from one thread both
    give what they give unshared."""
    rng = np.random.default_rng(8)
    a = _operands(rng, dtype, (384, 384)) + 20 * np.eye(384, dtype=dtype)
    b = _operands(rng, dtype, (384, 8))
    spd = a @ a.conj().T

    def run():
        return [np.linalg.inv(a), np.linalg.solve(a, b), *np.linalg.slogdet(a), np.linalg.cholesky(spd),
                *np.linalg.qr(a), *np.linalg.eigh(spd), *np.linalg.svd(a[:128, :96])]

    own = run()
    gradclip.share_blas_threads(True)
    try:
        shared = run()
    finally:
        gradclip.share_blas_threads(False)
    assert [np.asarray(x).tobytes() for x in shared] == [np.asarray(x).tobytes() for x in own]


@needs_callback
def test_without_the_pool_sections_start_threads(shared):
    """With the pool off (gradclip._C._set_thread_pool(False)) every section starts its own
    threads, one per job, and products stay bit-identical."""
    rng = np.random.default_rng(4)
    a, b = _operands(rng, np.float32, (256, 1024)), _operands(rng, np.float32, (1024, 512))
    gradclip.share_blas_threads(False)
    own = a @ b
    gradclip.share_blas_threads(True)
    gradclip._C._set_thread_pool(False)
    sections = gradclip._C._blas_sections()
    try:
        results = [a @ b for _ in range(5)]
    finally:
        gradclip._C._set_thread_pool(True)
    assert gradclip._C._blas_sections() - sections >= 5  # every product went through the callback
    assert all(r.tobytes() == own.tobytes() for r in results)


@needs_callback
def test_sections_go_through_the_callback_only_while_shared():
    a = np.ones((512, 512), np.float32)
    gradclip.share_blas_threads(True)
    try:
        before = gradclip._C._blas_sections()
        a @ a
        shared = gradclip._C._blas_sections() - before
    finally:
        gradclip.share_blas_threads(False)
    before = gradclip._C._blas_sections()
    a @ a
    assert shared >= 1 and gradclip._C._blas_sections() == before


@needs_callback
def test_openblas_without_the_hook_is_named(monkeypatch):
    """One OpenBLAS with the hook and one without: the first changes, a warning names the other."""
    numpys = list(gradclip.share_blas_threads(False))  # the loaded ones that have the hook
    libm = _libm()
    monkeypatch.setattr(_threads, "_loaded_openblas", lambda: [*numpys, libm])
    try:
        with pytest.warns(RuntimeWarning, match="libm"):
            assert gradclip.share_blas_threads(True) == tuple(numpys)
    finally:
        gradclip.share_blas_threads(False)


def test_unavailable_raises(monkeypatch):
    """No OpenBLAS with the callback (as in the oldest-NumPy job, or with MKL): a clear error.
    Also checked here where one exists, by hiding it."""
    monkeypatch.setattr(_threads, "_loaded_openblas", lambda: [])
    with pytest.raises(RuntimeError, match="openblas_set_threads_callback_function"):
        gradclip.share_blas_threads(True)
    with pytest.raises(RuntimeError, match="NumPy's BLAS is"):
        gradclip.share_blas_threads(False)


def test_without_the_symbol_is_not_counted(monkeypatch):
    """A library whose name says OpenBLAS but that lacks every setter name is passed over."""
    libm = _libm()
    monkeypatch.setattr(_threads, "_loaded_openblas", lambda: [libm])
    with pytest.raises(RuntimeError):
        gradclip.share_blas_threads(True)


def test_loaded_openblas_lists_numpys_when_it_is_openblas():
    blas = _threads._blas_name()
    paths = _threads._loaded_openblas()
    if "openblas" in blas.lower():
        assert paths, f"NumPy's BLAS is {blas} but no OpenBLAS found in /proc/self/maps"
    if AVAILABLE:
        assert paths


SPIN_SCRIPT = PROC_HELPERS + textwrap.dedent("""
    import sys, time, numpy as np, gradclip
    share = sys.argv[1]
    grads = [np.ones(1 << 21, np.float32)]
    if share in ("on", "on-off"):
        gradclip.share_blas_threads(True)
    if share == "on-off":
        gradclip.share_blas_threads(False)
    before = tasks()
    gradclip.get_total_norm(grads)  # pooled: starts the one worker
    (worker,) = tasks() - before
    spun = []
    for _ in range(5):
        gradclip.get_total_norm(grads)
        time.sleep(0.005)
        start = on_cpu_ns(worker)
        time.sleep(0.05)
        spun.append(on_cpu_ns(worker) - start)
    print(sorted(spun)[2])
""")


@needs_callback
def test_workers_spin_like_openblas_while_shared():
    """Shared, a pool worker spins ~0.1 s after a job (as OpenBLAS's workers do: a matmul's
    jobs wait for each other, and a worker that slept right after a job is woken late, often
    onto the caller's core); otherwise, and after sharing is turned off, 0.1 ms. Measured as
    the worker's time on a CPU in the 50 ms from 5 ms after a call (median of 5)."""
    spun = {}
    for share in ("off", "on", "on-off"):
        out = subprocess.run([sys.executable, "-c", SPIN_SCRIPT, share], capture_output=True, text=True,
                             timeout=120, env=dict(os.environ, GRADCLIP_NUM_THREADS="2"))
        assert out.returncode == 0, out.stderr
        spun[share] = int(out.stdout) / 1e6  # ms
    assert spun["off"] < 2 and spun["on-off"] < 2, spun
    assert spun["on"] > 5, spun  # 50 ms if it had a core to itself; less beside other tests


FORK_DURING_SECTIONS = textwrap.dedent("""
    import os, threading, numpy as np, gradclip
    gradclip.share_blas_threads(True)
    a = np.random.default_rng(1).standard_normal((384, 384))
    want = a @ a
    stop, bad = threading.Event(), []
    def multiply():
        while not stop.is_set():
            if not np.array_equal(a @ a, want):
                bad.append(1)
    t = threading.Thread(target=multiply, daemon=True)
    t.start()
    for _ in range(40):
        pid = os.fork()
        if pid == 0:
            os._exit(0)  # no BLAS here: OpenBLAS's level-3 lock may be held by the copy of `t`
        _, status = os.waitpid(pid, 0)
        assert os.waitstatus_to_exitcode(status) == 0, status
    stop.set()
    t.join(60)
    assert not t.is_alive() and not bad
    print("ok")
""")


@needs_callback
def test_fork_while_another_thread_multiplies():
    """fork() in one thread while another runs shared sections: the fork waits for the running
    section, because OpenBLAS's fork handler frees the per-thread buffers its jobs use; the
    parent's products stay correct. (The child does no BLAS: forking while another thread is
    inside a matrix product leaves OpenBLAS's level-3 lock held in the child, shared or not.)"""
    out = subprocess.run([sys.executable, "-c", FORK_DURING_SECTIONS], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and out.stdout.strip() == "ok", (out.returncode, out.stderr[-2000:])
