"""clip_grad_norm_ writes nothing when it clips nothing.

A coefficient of exactly 1 leaves every finite real element as it is, and a finite p-norm
(p > 0) means every element is finite, so the scaling pass is left out. What is observed here
is the memory itself: the gradient is a copy-on-write mapping of a file (np.memmap, mode "c"),
whose pages are copied into anonymous memory only when something writes to them.
"""

import sys

import numpy as np
import pytest

import gradclip

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc/self/smaps")

N = 1 << 20


def written_kib(path):
    """The copied-on-write ("Anonymous") part of the mapping of `path` in this process, in KiB."""
    total, inside = 0, False
    with open("/proc/self/smaps") as smaps:
        for line in smaps:
            if "-" in line.split(" ", 1)[0] and ":" not in line.split(" ", 1)[0]:
                inside = line.rstrip().endswith(str(path))
            elif inside and line.startswith("Anonymous:"):
                total += int(line.split()[1])
    return total


def mapped_gradient(tmp_path, dtype):
    path = tmp_path / f"grad-{np.dtype(dtype).name}.bin"
    values = np.random.default_rng(0).standard_normal(N)
    if np.dtype(dtype).kind == "c":
        values = values + 1j
    values.astype(dtype).tofile(path)
    return path, np.memmap(path, dtype=dtype, mode="c", shape=(N,))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, np.inf, 3.0])
def test_nothing_written_when_nothing_is_clipped(tmp_path, dtype, norm_type):
    path, g = mapped_gradient(tmp_path, dtype)
    before = np.array(g)
    total = gradclip.clip_grad_norm_([g], 1e30, norm_type)
    assert np.isfinite(total)
    assert written_kib(path) == 0
    np.testing.assert_array_equal(g, before)
    # The control: clipping does write (so the measurement can see writes).
    gradclip.clip_grad_norm_([g], float(total) / 2, norm_type)
    assert written_kib(path) >= N * np.dtype(dtype).itemsize // 1024 // 2


@pytest.mark.parametrize("norm_type", [0.0, -1.0, -np.inf])
def test_norms_that_can_be_finite_over_nan_still_scale(tmp_path, norm_type):
    # With p <= 0 a finite total says nothing about NaN elements, whose bits torch's multiply
    # by 1 may change (a signalling NaN is quieted): the pass runs, as in torch.
    path, g = mapped_gradient(tmp_path, np.float32)
    gradclip.clip_grad_norm_([g], 1e30, norm_type)
    assert written_kib(path) > 0


def test_complex_lists_still_scale(tmp_path):
    # (re*1 - im*0) turns -0 into +0 when im < 0: the pass runs, as in torch.
    path, g = mapped_gradient(tmp_path, np.complex64)
    gradclip.clip_grad_norm_([g], 1e30)
    assert written_kib(path) > 0


def test_nonfinite_total_still_scales_as_torch(tmp_path):
    path, g = mapped_gradient(tmp_path, np.float32)
    g[0] = np.inf  # dirties a page: measure the result instead
    gradclip.clip_grad_norm_([g], 1e30)
    assert np.all(g[1:] == 0) and np.isnan(g[0])  # torch: coef 0 (1e30 / inf), inf * 0 = nan


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("name", ["SGD", "Adam", "RMSprop"])
def test_fused_step_neither_scales_nor_writes_back_when_nothing_is_clipped(tmp_path, dtype, name):
    """clip_and_step with a coefficient of exactly 1 is the plain step: the gradient is only
    read (its mapping stays clean), and parameters and state are step()'s, bit for bit."""
    path, g = mapped_gradient(tmp_path, dtype)
    kwargs = {"SGD": dict(lr=0.1, momentum=0.9), "Adam": dict(lr=1e-3), "RMSprop": dict(lr=1e-2, momentum=0.5)}[name]
    start = np.random.default_rng(1).standard_normal(N).astype(dtype)
    fused_p = gradclip.Parameter(start.copy())
    fused_p.grad = g
    plain_p = gradclip.Parameter(start.copy())
    plain_p.grad = np.array(g)
    fused = getattr(gradclip.optim, name)([fused_p], **kwargs)
    plain = getattr(gradclip.optim, name)([plain_p], **kwargs)
    for _ in range(2):
        total = fused.clip_and_step(1e30)
        plain.step()
        assert np.isfinite(total) and written_kib(path) == 0
        np.testing.assert_array_equal(fused_p.data, plain_p.data, strict=True)
        for key, value in plain.state[plain_p].items():
            np.testing.assert_array_equal(fused.state[fused_p][key], value, strict=True)
    # The control: a clipping step writes the clipped gradient back, as clip_grad_norm_ would.
    fused.clip_and_step(float(total) / 2)
    assert written_kib(path) >= N * np.dtype(dtype).itemsize // 1024 // 2


@pytest.mark.parametrize("name", ["SGD", "Adam", "Adagrad", "Adafactor"])
@pytest.mark.parametrize("max_norm", [1e30, 1e-3])
def test_read_only_gradient_refused_with_write_back_whether_or_not_it_clips(name, max_norm):
    """write_back=True needs writable gradients even on a step that clips nothing (the fused
    step then writes none): the error must not depend on the data. write_back=False takes them."""
    def make():
        p = gradclip.Parameter(np.ones((4, 3), np.float32))
        g = np.full((4, 3), 0.1, np.float32)
        g.flags.writeable = False
        p.grad = g
        return p, getattr(gradclip.optim, name)([p], lr=0.1)
    p, opt = make()
    state = {k: np.array(v) for k, v in opt.state.get(p, {}).items()}  # Adagrad's exists already
    with pytest.raises(ValueError, match="read-only"):
        opt.clip_and_step(max_norm)
    np.testing.assert_array_equal(p.data, np.ones((4, 3), np.float32))  # nothing stepped
    after = opt.state.get(p, {})
    assert after.keys() == state.keys()
    for key, value in state.items():
        np.testing.assert_array_equal(after[key], value, strict=True)
    p, opt = make()
    opt.clip_and_step(max_norm, write_back=False)
    assert not np.array_equal(p.data, np.ones((4, 3), np.float32))
