"""AGC, AutoClip and ZClip against their reference implementations, re-implemented in torch.

The references are transcribed from their public sources (cited at each function) and run
by real torch on the same arrays; thresholds are compared with ==, gradients bit for bit
where the arithmetic is the same.
"""

import pickle

import numpy as np
import pytest
import torch

import gradclip
import gradclip.optim
from arrays import make_array

# ---------------------------------------------------------------------------------------------
# timm/utils/agc.py (huggingface/pytorch-image-models, commit 15d1dbc), transcribed verbatim.


def timm_unitwise_norm(x, norm_type=2.0):
    if x.ndim <= 1:
        return x.norm(norm_type)
    else:
        return x.norm(norm_type, dim=tuple(range(1, x.ndim)), keepdim=True)


def timm_adaptive_clip_grad(parameters, clip_factor=0.01, eps=1e-3, norm_type=2.0, unitwise_norm=timm_unitwise_norm):
    if isinstance(parameters, torch.Tensor):
        parameters = [parameters]
    for p in parameters:
        if p.grad is None:
            continue
        p_data = p.detach()
        g_data = p.grad.detach()
        max_norm = unitwise_norm(p_data, norm_type=norm_type).clamp_(min=eps).mul_(clip_factor)
        grad_norm = unitwise_norm(g_data, norm_type=norm_type)
        clipped_grad = g_data * (max_norm / grad_norm.clamp(min=1e-6))
        new_grads = torch.where(grad_norm < max_norm, g_data, clipped_grad)
        p.grad.detach().copy_(new_grads)


def exact_unitwise_norm(x, norm_type=2.0):
    """timm's unitwise_norm with gradclip's accumulation (float64, rounded once to the dtype),
    so that the rest of timm's arithmetic can be compared bit for bit."""
    a = x.detach().numpy()
    if a.ndim <= 1:
        n = gradclip.get_norms([a.astype(np.float64)], norm_type)[0]
        return torch.tensor(n).to(x.dtype)
    rows = [a[i].astype(np.float64) for i in range(a.shape[0])]
    n = gradclip.get_norms(rows, norm_type) if rows else np.zeros(0)
    return torch.from_numpy(np.asarray(n)).to(x.dtype).reshape((-1,) + (1,) * (a.ndim - 1))


def torch_agc(values, grads, unitwise_norm=timm_unitwise_norm, **kw):
    params = []
    for v, g in zip(values, grads):
        p = torch.nn.Parameter(torch.from_numpy(np.ascontiguousarray(v)).clone())
        p.grad = torch.from_numpy(np.ascontiguousarray(g)).clone()
        params.append(p)
    timm_adaptive_clip_grad(params, unitwise_norm=unitwise_norm, **kw)
    return [p.grad.numpy() for p in params]


SHAPES = {"linear": (8, 5), "conv": (4, 3, 3, 3), "bias": (7,), "scalar": ()}


def agc_case(rng, dtype, layout="C"):
    values, grads = [], []
    for shape in SHAPES.values():
        if len(shape) == 2:
            v = make_array(rng, layout, dtype, 1.0, shape=shape)
            g = make_array(rng, layout, dtype, 1.0, shape=shape)
        else:
            v = np.asarray(rng.standard_normal(shape)).astype(dtype)
            g = np.asarray(rng.standard_normal(shape)).astype(dtype)
        # Mixed units: some far above the bound, some far below (in place: keeps the layout).
        if g.ndim > 1:
            g *= np.where(rng.random(g.shape[0]) < 0.5, 1.0, 1e-4).astype(dtype).reshape((-1,) + (1,) * (g.ndim - 1))
        values.append(v)
        grads.append(g)
    return values, grads


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("layout", ["C", "F", "strided", "reversed", "transposed"])
@pytest.mark.parametrize("p", [2.0, 1.0, float("inf")])
def test_agc_bit_identical_to_timm_given_the_same_unit_norms(dtype, layout, p):
    rng = np.random.default_rng(5)
    values, grads = agc_case(rng, dtype, layout)
    expected = torch_agc(values, grads, unitwise_norm=exact_unitwise_norm, clip_factor=0.05, norm_type=p)
    gradclip.adaptive_clip_grad_(values, 0.05, norm_type=p, grads=grads)
    for got, want in zip(grads, expected):
        np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("clip_factor", [0.01, 0.1, 1.0])
def test_agc_matches_timm_run_by_torch(dtype, clip_factor):
    rng = np.random.default_rng(6)
    values, grads = agc_case(rng, dtype)
    expected = torch_agc(values, grads, clip_factor=clip_factor)
    gradclip.adaptive_clip_grad_(values, clip_factor, grads=grads)
    tol = 1e-6 if dtype == np.float32 else 1e-13
    for got, want in zip(grads, expected):
        np.testing.assert_allclose(got, want, rtol=tol, atol=0)
    assert any(not np.array_equal(g, g0) for g, g0 in zip(grads, agc_case(np.random.default_rng(6), dtype)[1]))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_agc_boundary_and_eps_bit_identical_to_timm(dtype):
    # Norms exact in every precision (3-4-5 rows), so torch's and gradclip's agree exactly.
    v = np.array([[6.0, 8.0], [0.0, 0.0], [6.0, 8.0], [0.0, 0.0]], dtype)  # row norms 10, 0
    g = np.array(
        [
            [0.3, 0.4],      # norm 0.5 == 10 * 0.05: exactly at the bound -> clipped branch (factor 1)
            [3e-5, 4e-5],    # zero weights: bound eps * 0.05 = 5e-5 == norm: clipped branch
            [3.0, 4.0],      # norm 5 > 0.5: scaled by 0.1
            [3e-6, 4e-6],    # below eps * 0.05: untouched
        ],
        dtype,
    )
    expected = torch_agc([v], [g], clip_factor=0.05, eps=1e-3)[0]
    gradclip.adaptive_clip_grad_([v], 0.05, eps=1e-3, grads=[g])
    np.testing.assert_array_equal(g, expected)
    np.testing.assert_allclose(g[2], [0.3, 0.4], rtol=1e-6)
    # At the bound with both norms below timm's 1e-6 floor the branches differ: where() takes
    # the clipped one (factor 2^-22 / 1e-6), not the original gradient.
    v = np.zeros((2, 2), dtype)
    g = np.array([[2.0**-22, 0.0], [2.0**-23, 0.0]], dtype)
    expected = torch_agc([v], [g], clip_factor=2.0**-6, eps=2.0**-16)[0]
    gradclip.adaptive_clip_grad_([v], 2.0**-6, eps=2.0**-16, grads=[g])
    np.testing.assert_array_equal(g, expected)
    assert g[0, 0] < 2.0**-22 and g[1, 0] == 2.0**-23


def test_agc_parameters_and_none_grads():
    w = gradclip.Parameter(np.ones((2, 3)))
    w.grad = np.full((2, 3), 5.0)
    b = gradclip.Parameter(np.ones(3))  # no grad: skipped
    expected = torch_agc([w.data], [w.grad.copy()])[0]
    gradclip.adaptive_clip_grad_([w, b])
    np.testing.assert_allclose(w.grad, expected, rtol=1e-15)
    with pytest.raises(TypeError, match="grads="):
        gradclip.adaptive_clip_grad_([np.ones(3)])
    with pytest.raises(ValueError, match="shape and dtype"):
        gradclip.adaptive_clip_grad_([np.ones(3)], grads=[np.ones(4)])
    before = w.grad.copy()
    with pytest.raises(ValueError, match="read-only"):
        ro = np.ones((2, 3))
        ro.flags.writeable = False
        gradclip.adaptive_clip_grad_([w.data, w.data], grads=[w.grad, ro])
    np.testing.assert_array_equal(w.grad, before)  # validated before any write


# ---------------------------------------------------------------------------------------------
# AutoClip: pseeth/autoclip, autoclip.py (add_autoclip_gradient_handler), transcribed for a
# list of torch parameters instead of an ignite engine.


class ReferenceAutoClip:
    def __init__(self, clip_percentile):
        self.grad_history = []
        self.clip_percentile = clip_percentile

    def step(self, params):
        obs_grad_norm = float(torch.nn.utils.get_total_norm([p.grad for p in params]))
        self.grad_history.append(obs_grad_norm)
        clip_value = np.percentile(self.grad_history, self.clip_percentile)
        torch.nn.utils.clip_grad_norm_(params, clip_value)
        return clip_value


SEQUENCE = [1.0, 1.0, 1.0, 50.0, 1.0, 2.0, 0.5, 1e3, 1.0, 3.0, 0.25, 1.0, 7.0, 1.0]


def one_element_grads(values, dtype):
    """Per step, a gradient whose total norm is exactly the value."""
    return [np.array([v, -0.0], dtype) for v in values]


@pytest.mark.parametrize("percentile", [10.0, 50.0, 90.0, 0.0, 100.0])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_autoclip_matches_reference(percentile, dtype):
    ours = gradclip.AutoClip(percentile)
    ref = ReferenceAutoClip(percentile)
    for g in one_element_grads(SEQUENCE, dtype):
        t = torch.nn.Parameter(torch.zeros(2, dtype=torch.from_numpy(g).dtype))
        t.grad = torch.from_numpy(g.copy())
        threshold = ref.step([t])
        info = ours([g])
        assert ours.last_threshold == threshold
        np.testing.assert_array_equal(g, t.grad.numpy())
        assert info.clipped == (info.clip_coef < 1)


def test_autoclip_ring_buffer_and_state_dict():
    ours = gradclip.AutoClip(25.0, history_size=4)
    for g in one_element_grads(SEQUENCE, np.float64):
        ours([g])
    assert ours.history == SEQUENCE[-4:]
    assert ours.last_threshold == np.percentile(SEQUENCE[-4:], 25.0)
    clone = gradclip.AutoClip()
    clone.load_state_dict(pickle.loads(pickle.dumps(ours.state_dict())))
    a, b = np.array([9.0]), np.array([9.0])
    ours([a])
    clone([b])
    assert ours.last_threshold == clone.last_threshold == np.percentile(SEQUENCE[-3:] + [9.0], 25.0)
    np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError):
        gradclip.AutoClip(101.0)
    with pytest.raises(ValueError):
        gradclip.AutoClip(10.0, history_size=0)


# ---------------------------------------------------------------------------------------------
# ZClip: bluorion-com/ZClip, zclip/zclip.py (commit 584ce4f), transcribed with the model
# replaced by a list of torch parameters (the non-FSDP branch).


class ReferenceZClip:
    def __init__(self, alpha=0.97, z_thresh=2.5, max_grad_norm=1.0, eps=1e-6,
                 warmup_steps=25, mode="zscore", clip_option="adaptive_scaling",
                 clip_factor=1.0, skip_update_on_spike=False):
        self.alpha = alpha
        self.z_thresh = z_thresh
        self.max_grad_norm = max_grad_norm
        self.eps = eps
        self.warmup_steps = warmup_steps
        self.mode = mode.lower()
        self.clip_factor = clip_factor
        self.skip_update_on_spike = skip_update_on_spike
        if self.mode == "zscore":
            assert clip_option in ["mean", "adaptive_scaling"]
            self.clip_option = clip_option.lower()
        elif self.mode == "percentile":
            self.clip_option = None
        else:
            raise ValueError("mode must be either 'zscore' or 'percentile'.")
        self.buffer = []
        self.initialized = False
        self.mean = None
        self.var = None
        self.effective = None

    def _initialize_ema(self):
        self.mean = sum(self.buffer) / len(self.buffer)
        self.var = sum((x - self.mean) ** 2 for x in self.buffer) / len(self.buffer)
        self.initialized = True
        self.buffer = []

    def _update_ema(self, grad_norm):
        self.mean = self.alpha * self.mean + (1 - self.alpha) * grad_norm
        self.var = self.alpha * self.var + (1 - self.alpha) * (grad_norm - self.mean) ** 2

    def _compute_positive_zscore(self, grad_norm):
        std = self.var ** 0.5
        z = (grad_norm - self.mean) / (std + self.eps)
        return z, std

    def _compute_grad_norm(self, params):
        dtype = params[0].dtype
        grad_norms = [p.grad.to(dtype).square().sum() for p in params if p.grad is not None]
        if not grad_norms:
            return 0.0
        return torch.stack(grad_norms).sum().sqrt().item()

    def _compute_clip_val(self, grad_norm):
        std = self.var ** 0.5
        if self.mode == "percentile":
            threshold = self.mean + self.z_thresh * std
            if grad_norm > threshold:
                return threshold
        elif self.mode == "zscore":
            z, std = self._compute_positive_zscore(grad_norm)
            if z > self.z_thresh:
                if self.clip_option == "adaptive_scaling":
                    eta = z / self.z_thresh
                    threshold = self.mean + (self.z_thresh * std) / eta
                    threshold = threshold * self.clip_factor
                elif self.clip_option == "mean":
                    threshold = self.mean
                return threshold
        return None

    def apply_in_place_clipping(self, params, global_norm, max_global_norm):
        clip_coef = (max_global_norm / (global_norm + 1e-6)) if global_norm > max_global_norm else 1.0
        if clip_coef < 1.0:
            for param in params:
                if param.grad is not None:
                    param.grad.data.mul_(clip_coef)

    def _apply_clipping(self, params, clip_val, total_norm):
        adaptive_clip = clip_val if clip_val is not None else total_norm
        if self.max_grad_norm is not None:
            effective_clip = min(adaptive_clip, self.max_grad_norm)
        else:
            effective_clip = adaptive_clip
        self.apply_in_place_clipping(params, total_norm, effective_clip)
        return effective_clip

    def step(self, params):
        total_norm = self._compute_grad_norm(params)
        if not self.initialized:
            self.buffer.append(total_norm)
            if len(self.buffer) >= self.warmup_steps:
                self._initialize_ema()
            self.effective = self.max_grad_norm
            if self.max_grad_norm is not None:
                torch.nn.utils.clip_grad_norm_(params, self.max_grad_norm)
            return total_norm
        clip_val = self._compute_clip_val(total_norm)
        self.effective = self._apply_clipping(params, clip_val, total_norm)
        if clip_val is not None and self.skip_update_on_spike:
            return total_norm
        self._update_ema(clip_val if clip_val is not None else total_norm)
        return total_norm


ZCLIP_SETTINGS = [
    dict(warmup_steps=3),
    dict(warmup_steps=3, max_grad_norm=None),
    dict(warmup_steps=3, max_grad_norm=None, clip_option="mean"),
    dict(warmup_steps=3, max_grad_norm=5.0, mode="percentile"),
    dict(warmup_steps=3, max_grad_norm=None, mode="percentile", z_thresh=1.0),
    dict(warmup_steps=2, max_grad_norm=None, skip_update_on_spike=True, clip_factor=0.7),
    dict(warmup_steps=0, max_grad_norm=2.0, alpha=0.5),
    dict(warmup_steps=3, max_grad_norm=None, z_thresh=0.5, mode="zscore"),
]


@pytest.mark.parametrize("settings", ZCLIP_SETTINGS)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_zclip_matches_reference(settings, dtype):
    ours = gradclip.ZClip(**settings)
    ref = ReferenceZClip(**settings)
    # Integers and halves: exact squares in float32 too, so both measure the same norms.
    seq = [1.0, 1.0, 1.0, 50.0, 1.0, 2.0, 0.5, 1000.0, 1.0, 3.0, 0.25, 1.0, 7.0, 1.0, 1.0, 20.0]
    clipped = 0
    for g in one_element_grads(seq, dtype):
        t = torch.nn.Parameter(torch.zeros(2, dtype=torch.from_numpy(g).dtype))
        t.grad = torch.from_numpy(g.copy())
        total = ref.step([t])
        info = ours([g])
        assert float(info.total_norm) == total
        assert ours.last_threshold == ref.effective
        assert (ours.mean, ours.var, ours.initialized, ours.buffer) == (ref.mean, ref.var, ref.initialized, ref.buffer)
        np.testing.assert_array_equal(g, t.grad.numpy())
        clipped += info.clipped
    assert clipped > 0


def test_zclip_state_dict_round_trip_and_errors():
    a = gradclip.ZClip(warmup_steps=3, max_grad_norm=None)
    for g in one_element_grads([1.0, 2.0, 1.5, 1.0], np.float64):
        a([g])
    b = gradclip.ZClip()
    b.load_state_dict(pickle.loads(pickle.dumps(a.state_dict())))
    ga, gb = np.array([30.0]), np.array([30.0])
    ia, ib = a([ga]), b([gb])
    assert ia == ib and ia.clipped
    np.testing.assert_array_equal(ga, gb)
    with pytest.raises(ValueError, match="mode must be"):
        gradclip.ZClip(mode="nope")
    with pytest.raises(ValueError, match="clip_option"):
        gradclip.ZClip(clip_option="nope")


# ---------------------------------------------------------------------------------------------
# Through the optimizer: the same thresholds, the fused step equal to clip-then-step.


@pytest.mark.parametrize("make", [lambda: gradclip.AutoClip(50.0), lambda: gradclip.ZClip(warmup_steps=2, max_grad_norm=None),
                                  lambda: gradclip.AGC(0.05)])
@pytest.mark.parametrize("opt_name", ["SGD", "Adam"])
def test_clipper_through_optimizer_equals_clip_then_step(make, opt_name):
    rng = np.random.default_rng(3)
    w0 = [rng.standard_normal((4, 3)).astype(np.float32), rng.standard_normal(3).astype(np.float32)]
    opt_cls = getattr(gradclip.optim, opt_name)
    kw = dict(lr=0.1, momentum=0.9) if opt_name == "SGD" else dict(lr=0.01)
    pa = [gradclip.Parameter(w.copy()) for w in w0]
    pb = [gradclip.Parameter(w.copy()) for w in w0]
    oa, ob = opt_cls(pa, **kw), opt_cls(pb, **kw)
    ca, cb = make(), make()
    for step in range(6):
        scale = 30.0 if step == 4 else 1.0
        gs = [scale * rng.standard_normal(w.shape).astype(np.float32) for w in w0]
        for p, g in zip(pa, gs):
            p.grad = g.copy()
        for p, g in zip(pb, gs):
            p.grad = g.copy()
        oa.clip_and_step(clipper=ca)
        cb(pb)
        ob.step()
        for x, y in zip(pa, pb):
            np.testing.assert_array_equal(x.data, y.data)
            np.testing.assert_array_equal(x.grad, y.grad)


def test_agc_threads_agree_and_bound_holds():
    rng = np.random.default_rng(8)
    values = [rng.standard_normal((1200, 900)).astype(np.float32), rng.standard_normal((64, 3, 3, 3)).astype(np.float32)]
    grads = [(rng.standard_normal(v.shape) * 10).astype(np.float32) for v in values]
    grads[0][::2] *= np.float32(1e-5)  # half the units below their bound
    threads = gradclip.get_num_threads()
    out = []
    try:
        for n in (1, 4):
            gradclip.set_num_threads(n)
            g = [a.copy() for a in grads]
            gradclip.adaptive_clip_grad_(values, 0.01, grads=g)
            out.append(g)
    finally:
        gradclip.set_num_threads(threads)
    for a, b in zip(*out):
        np.testing.assert_array_equal(a, b)
    # The property AGC promises: every unit's gradient norm ends at most clip_factor x its
    # parameter's unit norm (up to rounding), and units below the bound are untouched.
    for v, g0, g in zip(values, grads, out[0]):
        axes = tuple(range(1, v.ndim))
        pn = np.sqrt((v.astype(np.float64) ** 2).sum(axis=axes))
        gn0 = np.sqrt((g0.astype(np.float64) ** 2).sum(axis=axes))
        gn = np.sqrt((g.astype(np.float64) ** 2).sum(axis=axes))
        bound = np.maximum(pn, 1e-3) * 0.01
        assert (gn <= bound * (1 + 1e-5)).all()
        below = gn0 < bound * (1 - 1e-5)
        np.testing.assert_array_equal(g[below], g0[below])
        assert not np.array_equal(g, g0)
    assert (np.sqrt((grads[0].astype(np.float64) ** 2).sum(axis=1)) < 0.01 * np.sqrt((values[0].astype(np.float64) ** 2).sum(axis=1))).sum() >= 600
