"""Rich results (ClipInfo, get_norms), the non-finite policy and per-group thresholds."""

import pickle

import numpy as np
import pytest
import torch

import gradclip
import gradclip.optim
from arrays import LAYOUTS, make_array
import reference as ref

NORMS = [2.0, 1.0, float("inf"), 0.5, 0.0]


def grads_in_every_layout(seed, dtype, scale=1.0):
    rng = np.random.default_rng(seed)
    return [make_array(rng, layout, dtype, scale) for layout in LAYOUTS if layout != "empty"]


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("p", NORMS)
def test_get_norms_are_what_the_total_uses(dtype, p):
    g = grads_in_every_layout(0, dtype)
    norms = gradclip.get_norms(g, p)
    total = gradclip.get_total_norm(g, p)
    assert norms.dtype == total.dtype and norms.shape == (len(g),)
    for a, n in zip(g, norms):
        assert n == total.dtype.type(ref.vector_norm(a, p)) or np.isclose(n, ref.vector_norm(a, p), rtol=1e-6)
    # The total formed from the norms (float64, as gradclip forms it) is the total itself.
    raw, _ = gradclip._C.array_norms(g, p, False)
    assert gradclip._C.combine_norms(raw, p, False, total.dtype == np.float32) == total
    np.testing.assert_array_equal(raw.astype(norms.dtype), norms)
    tn = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(torch.from_numpy(a.astype(np.float64)), p) for a in g]), p)
    np.testing.assert_allclose(float(total), float(tn), rtol=1e-6)


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
@pytest.mark.parametrize("p", NORMS)
@pytest.mark.parametrize("scale", [1e-3, 1.0, 100.0])
def test_return_info_fields_and_gradients_equal_plain_call(dtype, p, scale):
    g1 = grads_in_every_layout(1, dtype, scale)
    g2 = grads_in_every_layout(1, dtype, scale)  # the same layouts: the same reduction order
    norms = gradclip.get_norms(g1, p)
    total = gradclip.clip_grad_norm_(g1, 1.0, p)
    info = gradclip.clip_grad_norm_(g2, 1.0, p, return_info=True)
    assert isinstance(info, gradclip.ClipInfo)
    assert info.total_norm == total and type(info.total_norm) is type(total)
    np.testing.assert_array_equal(info.norms, norms)
    assert info.clip_coef == float(ref.clip_coef(float(total), 1.0, total.dtype))
    assert info.clipped == (info.clip_coef < 1) and info.num_nonfinite == 0 and not info.skipped
    for a, b in zip(g1, g2):
        np.testing.assert_array_equal(a, b)
    t_info = gradclip.get_total_norm(g2, p, return_info=True)
    assert t_info.clip_coef == 1.0 and not t_info.clipped
    assert pickle.loads(pickle.dumps(info)) == info
    with pytest.raises(AttributeError):
        info.total_norm = 0.0  # frozen


@pytest.mark.parametrize("p", [2.0, 1.0, float("inf")])
def test_return_info_matches_torch(p):
    rng = np.random.default_rng(9)
    grads = [rng.standard_normal(s).astype(np.float32) for s in [(3, 4), (5,), (2, 2, 2)]]
    params = []
    for g in grads:
        t = torch.nn.Parameter(torch.zeros(g.shape))
        t.grad = torch.from_numpy(g.copy())
        params.append(t)
    info = gradclip.clip_grad_norm_(grads, 1.0, p, return_info=True)
    t_total = torch.nn.utils.clip_grad_norm_(params, 1.0, p)
    np.testing.assert_allclose(float(info.total_norm), float(t_total), rtol=1e-6)
    t_norms = [float(torch.linalg.vector_norm(t.grad / float(info.clip_coef), p)) for t in params]
    np.testing.assert_allclose(info.norms, t_norms, rtol=1e-5)
    assert info.clipped


BAD = [float("nan"), float("inf")]


@pytest.mark.parametrize("bad", BAD)
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_skip_leaves_every_byte(bad, dtype):
    g = grads_in_every_layout(2, dtype)
    g[2][(0,) * g[2].ndim] = bad
    before = [a.tobytes() for a in g]
    info = gradclip.clip_grad_norm_(g, 1.0, nonfinite="skip", return_info=True)
    assert info.skipped and not np.isfinite(info.total_norm) and info.num_nonfinite == 1
    assert info.clip_coef == 1.0 and not info.clipped
    assert [a.tobytes() for a in g] == before
    total = gradclip.clip_grad_norm_(g, 1.0, nonfinite="skip")
    assert np.isnan(total) if bad != bad else np.isinf(total)
    assert [a.tobytes() for a in g] == before
    # Finite: skip is the plain call.
    ok = grads_in_every_layout(2, dtype)
    ok2 = grads_in_every_layout(2, dtype)
    assert gradclip.clip_grad_norm_(ok, 1.0, nonfinite="skip") == gradclip.clip_grad_norm_(ok2, 1.0)
    for a, b in zip(ok, ok2):
        np.testing.assert_array_equal(a, b)


@pytest.mark.parametrize("bad", BAD)
def test_raise_equals_error_if_nonfinite(bad):
    g = [np.array([1.0, bad]), np.ones(3)]
    before = [a.copy() for a in g]
    with pytest.raises(RuntimeError, match="non-finite") as e1:
        gradclip.clip_grad_norm_(g, 1.0, nonfinite="raise")
    with pytest.raises(RuntimeError) as e2:
        gradclip.clip_grad_norm_(g, 1.0, error_if_nonfinite=True)
    assert str(e1.value) == str(e2.value)
    with pytest.raises(RuntimeError):
        gradclip.clip_grad_norm_(g, 1.0, error_if_nonfinite=True, nonfinite="raise", return_info=True)
    with pytest.raises(RuntimeError):
        gradclip.get_total_norm(g, nonfinite="raise")
    for a, b in zip(g, before):
        np.testing.assert_array_equal(a, b)
    for policy in ("skip", "zero"):
        with pytest.raises(ValueError, match="contradicts"):
            gradclip.clip_grad_norm_(g, 1.0, error_if_nonfinite=True, nonfinite=policy)
    with pytest.raises(ValueError, match="nonfinite must be"):
        gradclip.clip_grad_norm_(g, 1.0, nonfinite="ignore")


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("p", [2.0, 1.0, float("inf")])
def test_zero_policy(dtype, p):
    g = grads_in_every_layout(3, dtype, 10.0)
    bad_index = [1, 4]
    g[1][0, 0] = np.nan
    g[4][()] = np.inf
    finite = [a for i, a in enumerate(grads_in_every_layout(3, dtype, 10.0)) if i not in bad_index]
    info = gradclip.clip_grad_norm_(g, 1.0, p, nonfinite="zero", return_info=True)
    expected_total = gradclip.clip_grad_norm_(finite, 1.0, p)
    assert info.total_norm == expected_total and info.num_nonfinite == 2 and not info.skipped
    assert not np.isfinite(info.norms[bad_index]).any()
    for i in bad_index:
        assert not g[i].any() and not np.signbit(g[i]).any()
    for a, b in zip([a for i, a in enumerate(g) if i not in bad_index], finite):
        np.testing.assert_array_equal(a, b)
    # get_total_norm: left out of the total, nothing modified.
    h = [np.array([3.0, 4.0]), np.array([np.nan])]
    assert gradclip.get_total_norm(h, nonfinite="zero") == 5.0
    assert np.isnan(h[1][0])


def test_propagate_default_is_torchs():
    g = [np.array([1.0, np.inf], np.float32)]
    t = torch.nn.Parameter(torch.zeros(2))
    t.grad = torch.from_numpy(g[0].copy())
    info = gradclip.clip_grad_norm_(g, 1.0, return_info=True)
    torch.nn.utils.clip_grad_norm_([t], 1.0)
    np.testing.assert_array_equal(g[0], t.grad.numpy())
    assert info.num_nonfinite == 1 and not info.skipped and np.isinf(info.total_norm)


# ---------------------------------------------------------------------------------------------
# The optimizer


def make_optimizer(name, dtype=np.float32, groups=None, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(5, 4), (4,), (3, 3), (2,)]
    params = [gradclip.Parameter(rng.standard_normal(s).astype(dtype)) for s in shapes]
    for p in params:
        p.grad = (3.0 * rng.standard_normal(p.data.shape)).astype(dtype)
    spec = groups or [{"params": params[:2]}, {"params": params[2:], "max_norm": 0.5}]
    if groups is None:
        spec[0]["params"], spec[1]["params"] = params[:2], params[2:]
    cls = getattr(gradclip.optim, name)
    kw = dict(lr=0.1, momentum=0.9, weight_decay=0.01) if name == "SGD" else dict(lr=0.01, amsgrad=True)
    return cls(spec, **kw), params


def snapshot(opt, params):
    state = pickle.dumps(opt.state_dict())
    return [p.data.tobytes() for p in params], [p.grad.tobytes() for p in params], state


@pytest.mark.parametrize("name", ["SGD", "Adam", "AdamW"])
@pytest.mark.parametrize("bad", BAD)
def test_optimizer_skip_changes_nothing(name, bad):
    opt, params = make_optimizer(name)
    opt.clip_and_step(1.0)  # state exists (momentum buffers, steps)
    for p in params:
        p.grad = np.ones_like(p.data)
    params[2].grad[1, 1] = bad
    before = snapshot(opt, params)
    info = opt.clip_and_step(1.0, nonfinite="skip", return_info=True)
    assert info.skipped and info.num_nonfinite == 1
    assert snapshot(opt, params) == before
    infos = opt.clip_and_step(1.0, nonfinite="skip", per_group=True, return_info=True)
    assert [i.skipped for i in infos] == [True, True]
    assert snapshot(opt, params) == before
    assert opt.clip_and_step(clipper=gradclip.AutoClip(), nonfinite="skip") != 0
    assert snapshot(opt, params) == before
    # A fresh optimizer: a skipped first step creates no state either.
    fresh, fparams = make_optimizer(name)
    fparams[0].grad[0, 0] = bad
    fresh.clip_and_step(1.0, nonfinite="skip")
    assert len(fresh.state) == 0


@pytest.mark.parametrize("name", ["SGD", "Adam"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_per_group_equals_separate_calls(name, dtype):
    opt, params = make_optimizer(name, dtype)
    ref_opt, ref_params = make_optimizer(name, dtype)
    for step in range(3):
        totals = opt.clip_and_step(2.0, per_group=True)
        expected = [
            gradclip.clip_grad_norm_(g["params"], g.get("max_norm", 2.0)) for g in ref_opt.param_groups
        ]
        ref_opt.step()
        assert totals == expected and [type(t) for t in totals] == [type(t) for t in expected]
        for a, b in zip(params, ref_params):
            np.testing.assert_array_equal(a.data, b.data)
            np.testing.assert_array_equal(a.grad, b.grad)
        opt.param_groups[0]["max_norm"] = 0.1 * (step + 1)  # a group key, changeable
        ref_opt.param_groups[0]["max_norm"] = 0.1 * (step + 1)
        rng = np.random.default_rng(step)
        for a, b in zip(params, ref_params):
            a.grad = (3.0 * rng.standard_normal(a.data.shape)).astype(dtype)
            b.grad = a.grad.copy()
    infos = opt.clip_and_step(2.0, per_group=True, return_info=True)
    assert len(infos) == 2 and all(isinstance(i, gradclip.ClipInfo) for i in infos)
    assert [len(i.norms) for i in infos] == [2, 2]


@pytest.mark.parametrize("name", ["SGD", "Adam"])
def test_optimizer_return_info_and_zero(name):
    opt, params = make_optimizer(name)
    ref_opt, ref_params = make_optimizer(name)
    norms = gradclip.get_norms([p.grad for p in ref_params])
    info = opt.clip_and_step(1.0, return_info=True)
    total = ref_opt.clip_and_step(1.0)
    assert info.total_norm == total
    np.testing.assert_array_equal(info.norms, norms)
    for a, b in zip(params, ref_params):
        np.testing.assert_array_equal(a.data, b.data)
    # zero: the bad gradient becomes zeros, the others clipped by the finite total.
    for a, b in zip(params, ref_params):
        a.grad = np.ones_like(a.data)
        b.grad = np.ones_like(b.data)
    params[1].grad[0] = np.nan
    ref_params[1].grad[:] = 0.0
    finite_total = gradclip.get_total_norm([p.grad for i, p in enumerate(ref_params) if i != 1])
    info = opt.clip_and_step(1.0, nonfinite="zero", return_info=True)
    assert info.total_norm == finite_total and info.num_nonfinite == 1
    coef = info.clip_coef
    for p in ref_params:
        gradclip.clip_grads_with_norm_([p], 1.0, finite_total)
    ref_opt.step()
    assert coef < 1
    for a, b in zip(params, ref_params):
        np.testing.assert_array_equal(a.data, b.data)
        np.testing.assert_array_equal(a.grad, b.grad)


def test_optimizer_plain_path_unchanged_and_argument_errors():
    opt, params = make_optimizer("SGD")
    with pytest.raises(TypeError, match="max_norm"):
        opt.clip_and_step()
    with pytest.raises(ValueError, match="not both"):
        opt.clip_and_step(1.0, per_group=True, clipper=gradclip.AutoClip())
    with pytest.raises(TypeError, match="clipper"):
        opt.clip_and_step(clipper=object())
    with pytest.raises(ValueError, match="contradicts"):
        opt.clip_and_step(1.0, error_if_nonfinite=True, nonfinite="skip")
    assert isinstance(opt.clip_and_step(1.0), np.floating)
