"""LBFGS against torch.optim.LBFGS on real closures, and the list algebra it runs on.

gradclip's LBFGS does every operation torch's does, in the same order and rounding, except its
reductions (dot products and ``abs().sum()``), which it accumulates in float64 / compensated
instead of calling MKL, and the line search's scalar square root (NumPy's is correctly
rounded, torch's float32 one is 1 ulp off now and then). The first tests substitute torch's
own reductions and sqrt and demand bit identity over many closure evaluations (both line
searches, float32/float64/complex64/complex128, including a diverging run): everything else is
exact. The next ones measure gradclip as it ships against torch: the tolerances asserted are
the measured differences with a margin.
"""

import copy
import math

import numpy as np
import pytest
import torch

import gradclip
from gradclip import Parameter, _C, optim
from gradclip.demo.models import CharRNN
from gradclip.optim import lbfgs as lbfgs_module
from gradclip.optim.lbfgs import LBFGS

DTYPES = [np.float32, np.float64]
LINE_SEARCHES = [None, "strong_wolfe"]
TORCH_STATE_KEYS = ["func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad", "prev_loss"]


@pytest.fixture
def torch_reductions(monkeypatch):
    """Make gradclip's LBFGS use torch's dot product, abs().sum() and scalar sqrt."""

    def dot(self, x, y):
        return self._dtype().type(torch.from_numpy(x).dot(torch.from_numpy(y)).item())

    def abs_sum(self, x):
        return self._dtype().type(torch.from_numpy(x).abs().sum().item())

    def sqrt(x):
        # _cubic_interpolate's sqrt of a 0-d tensor (a NumPy scalar here), or of a float.
        if isinstance(x, np.generic):
            return type(x)(torch.from_numpy(np.asarray(x)).sqrt().item())
        return math.sqrt(x)

    monkeypatch.setattr(LBFGS, "_dot", dot)
    monkeypatch.setattr(LBFGS, "_abs_sum", abs_sum)
    monkeypatch.setattr(lbfgs_module, "_sqrt", sqrt)


# -- problems: a NumPy loss and gradient, evaluated for both sides ------------------------


def least_squares(dtype, seed=0):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((40, 7)).astype(dtype)
    b = rng.standard_normal(40).astype(dtype)
    init = [(0.1 * rng.standard_normal((7, 3))).astype(dtype), np.zeros(3, dtype)]

    def f(W, c):
        r = A @ W + c - b[:, None]
        return 0.5 * float(np.sum(r.astype(np.float64) ** 2)), [A.T @ r, r.sum(axis=0)]

    return init, f


def rnn(dtype, seed=1):
    """The demo's character RNN on one window: loss and BPTT gradients."""
    rng = np.random.default_rng(seed)
    model = CharRNN(12, 10, rng=rng, dtype=dtype, init_std=0.3)
    inputs, targets = rng.integers(0, 12, (8, 3)), rng.integers(0, 12, (8, 3))
    names = list(model.params)
    init = [p.data.copy() for p in model.parameters()]

    def f(*values):
        for p, v in zip(model.parameters(), values):
            p.data[...] = v
        loss, cache = model.forward(inputs, targets, model.initial_state(3))
        grads, _ = model.backward(cache)
        return loss, [grads[n] for n in names]

    return init, f


def complex_least_squares(dtype, seed=0, mixed=False):
    """min 0.5 * ||A W + c - b||^2 over complex W (7x3) and c (3; real with ``mixed``).

    The gradient is that of the loss in the real and imaginary parts (torch's convention for a
    real loss of complex parameters): A^H r for W, the column sums of r for c.
    """
    rng = np.random.default_rng(seed)
    real = np.finfo(dtype).dtype

    def cplx(*shape):
        return (rng.standard_normal(shape) + 1j * rng.standard_normal(shape)).astype(dtype)

    A, b = cplx(40, 7), cplx(40)
    init = [0.1 * cplx(7, 3), np.zeros(3, real if mixed else dtype)]

    def f(W, c):
        r = A @ W + c - b[:, None]
        gc = r.sum(axis=0)
        loss = 0.5 * float(np.sum(np.abs(r.astype(np.complex128)) ** 2))
        return loss, [(A.conj().T @ r).astype(dtype), gc.real.astype(real) if mixed else gc.astype(dtype)]

    return init, f


PROBLEMS = {"least_squares": least_squares, "rnn": rnn}


class Side:
    """One optimizer over copies of the initial values, with a closure calling f."""

    def __init__(self, kind, init, f, **kwargs):
        self.kind = kind
        if kind == "torch":
            self.params = [torch.tensor(x.copy()) for x in init]
            self.opt = torch.optim.LBFGS(self.params, **kwargs)
        else:
            self.params = [Parameter(x.copy()) for x in init]
            self.opt = optim.LBFGS(self.params, **kwargs)
        self.f = f
        self.evaluations = 0

    def values(self):
        return [p.detach().numpy() if self.kind == "torch" else p.data for p in self.params]

    def closure(self):
        self.evaluations += 1
        loss, grads = self.f(*[v.copy() for v in self.values()])
        for p, g in zip(self.params, grads):
            p.grad = torch.from_numpy(g.copy()) if self.kind == "torch" else g.copy()
        return loss

    def step(self):
        return self.opt.step(self.closure)

    def state(self):
        return self.opt.state[self.params[0]]


def assert_same_state(ours, theirs, exact=True):
    assert list(ours) == [k for k in TORCH_STATE_KEYS + ["al"] if k in theirs]
    for key, value in theirs.items():
        _same(ours[key], value, key)


def _same(ours, theirs, what):
    if isinstance(theirs, torch.Tensor):
        expected = theirs.numpy()
        got = np.asarray(ours)
        assert got.dtype == expected.dtype and got.shape == expected.shape, what
        np.testing.assert_array_equal(got, expected, err_msg=what)
    elif isinstance(theirs, list):
        assert isinstance(ours, list) and len(ours) == len(theirs), what
        for i, (o, t) in enumerate(zip(ours, theirs)):
            _same(o, t, f"{what}[{i}]")
    else:
        assert ours == theirs and type(ours) is type(theirs), (what, ours, theirs)


# -- bit identity, reductions aside --------------------------------------------------------


@pytest.mark.parametrize("problem", sorted(PROBLEMS))
@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_bit_identical_given_torchs_reductions(torch_reductions, problem, line_search_fn, dtype):
    init, f = PROBLEMS[problem](dtype)
    # lr 0.5 with fixed steps makes the RNN diverge on step 4: large numbers, still exact.
    kwargs = dict(lr=0.5 if line_search_fn is None else 1.0, line_search_fn=line_search_fn, history_size=5)
    ours, theirs = Side("gradclip", init, f, **kwargs), Side("torch", init, f, **kwargs)
    for step in range(6):
        assert ours.step() == theirs.step()
        assert ours.evaluations == theirs.evaluations
        for a, b in zip(ours.values(), theirs.values()):
            np.testing.assert_array_equal(a, b, err_msg=f"step {step}")
        state, tstate = ours.state(), theirs.state()
        for key in ("func_evals", "n_iter", "d", "t", "old_dirs", "old_stps", "ro", "H_diag", "prev_flat_grad", "prev_loss"):
            if isinstance(tstate[key], torch.Tensor):
                np.testing.assert_array_equal(np.asarray(state[key]), tstate[key].numpy(), err_msg=key)
                assert np.asarray(state[key]).dtype == tstate[key].numpy().dtype, key
            elif isinstance(tstate[key], list):
                assert len(state[key]) == len(tstate[key]), key
                for o, t in zip(state[key], tstate[key]):
                    np.testing.assert_array_equal(np.asarray(o), t.numpy(), err_msg=key)
            else:
                assert state[key] == tstate[key], key
        assert list(state) == list(tstate)


# -- as shipped: measured tolerances ------------------------------------------------------

# The relative difference of the parameters (max |ours - torch| / max |torch|) measured after
# the steps below, and the bound asserted (a margin of ~5-10x over the worst measurement).
# float64: 1.6e-16 (least squares), 6e-15 / 1.8e-13 (RNN, 20 iterations, fixed / Wolfe).
# float32: 1.8e-7 (least squares), 3.2e-6 / 1.4e-5 (RNN).
TOLERANCE = {np.float32: 1e-4, np.float64: 2e-12}


@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_least_squares_matches_torch(line_search_fn, dtype):
    init, f = least_squares(dtype)
    ours, theirs = Side("gradclip", init, f, line_search_fn=line_search_fn), Side("torch", init, f, line_search_fn=line_search_fn)
    for _ in range(3):
        ours.step(), theirs.step()
    scale = max(float(np.abs(b).max()) for b in theirs.values())
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ours.values(), theirs.values()))
    assert diff <= TOLERANCE[dtype] * scale
    # Converged to the least-squares solution, as torch.
    A_loss, _ = f(*ours.values())
    B_loss, _ = f(*theirs.values())
    assert A_loss == pytest.approx(B_loss, rel=10 * TOLERANCE[dtype])


@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
@pytest.mark.parametrize("dtype", DTYPES)
def test_rnn_step_matches_torch(line_search_fn, dtype):
    # One step is 20 iterations (up to 25 evaluations) on the demo's RNN and its BPTT gradient.
    init, f = rnn(dtype)
    kwargs = dict(lr=0.5 if line_search_fn is None else 1.0, line_search_fn=line_search_fn)
    ours, theirs = Side("gradclip", init, f, **kwargs), Side("torch", init, f, **kwargs)
    loss0 = ours.step()
    assert loss0 == theirs.step()
    assert ours.evaluations == theirs.evaluations
    scale = max(float(np.abs(b).max()) for b in theirs.values())
    diff = max(float(np.abs(a - b).max()) for a, b in zip(ours.values(), theirs.values()))
    assert diff <= TOLERANCE[dtype] * scale
    assert f(*ours.values())[0] < 0.1 * loss0  # it learned


# -- state ---------------------------------------------------------------------------------


@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
def test_state_keys_and_types_like_torch(torch_reductions, line_search_fn):
    init, f = rnn(np.float32)
    ours, theirs = Side("gradclip", init, f, line_search_fn=line_search_fn), Side("torch", init, f, line_search_fn=line_search_fn)
    ours.step(), theirs.step()
    ours.step(), theirs.step()
    state, tstate = ours.state(), theirs.state()
    assert list(state) == list(tstate)
    for key in ("d", "prev_flat_grad"):
        assert isinstance(state[key], np.ndarray) and state[key].ndim == 1
    assert isinstance(state["n_iter"], int) and isinstance(state["func_evals"], int)
    assert isinstance(state["prev_loss"], float)
    assert all(isinstance(r, np.float32) for r in state["ro"])
    # Only the first parameter holds state, as in torch.
    assert len(ours.opt.state) == 1 and len(theirs.opt.state) == 1


@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
def test_state_dict_round_trip_continues_exactly(line_search_fn):
    init, f = rnn(np.float64)
    a = Side("gradclip", init, f, line_search_fn=line_search_fn, lr=0.5)
    b = Side("gradclip", init, f, line_search_fn=line_search_fn, lr=0.5)
    a.step(), b.step()
    sd = copy.deepcopy(b.opt.state_dict())
    b.opt = optim.LBFGS(b.params, line_search_fn=line_search_fn, lr=0.5)
    b.opt.load_state_dict(sd)
    for _ in range(2):
        assert a.step() == b.step()
        for x, y in zip(a.values(), b.values()):
            np.testing.assert_array_equal(x, y)


def test_torch_state_dict_loads_and_continues(torch_reductions):
    init, f = rnn(np.float32)
    ours, theirs = Side("gradclip", init, f, line_search_fn="strong_wolfe"), Side("torch", init, f, line_search_fn="strong_wolfe")
    theirs.step()
    for p, v in zip(ours.params, theirs.values()):
        p.data[...] = v
    ours.opt.load_state_dict(copy.deepcopy(theirs.opt.state_dict()))
    for _ in range(2):
        assert ours.step() == theirs.step()
        for x, y in zip(ours.values(), theirs.values()):
            np.testing.assert_array_equal(x, y)


# -- complex parameters (torch's view_as_real) -----------------------------------------------

COMPLEX = [np.complex64, np.complex128]
COMPLEX_CASES = [(dt, False) for dt in COMPLEX] + [(np.complex64, True)]  # True: a float32 bias too


@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
@pytest.mark.parametrize("dtype,mixed", COMPLEX_CASES, ids=["complex64", "complex128", "complex64+float32"])
def test_complex_bit_identical_given_torchs_reductions(torch_reductions, line_search_fn, dtype, mixed):
    # Short steps (4 iterations) so that six of them do not converge: every step moves, and
    # the state after each is compared whole, bit for bit.
    init, f = complex_least_squares(dtype, mixed=mixed)
    kwargs = dict(lr=0.5 if line_search_fn is None else 1.0, line_search_fn=line_search_fn, history_size=3, max_iter=4)
    ours, theirs = Side("gradclip", init, f, **kwargs), Side("torch", init, f, **kwargs)
    for step in range(6):
        assert ours.step() == theirs.step()
        assert ours.evaluations == theirs.evaluations
        for a, b in zip(ours.values(), theirs.values()):
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b, err_msg=f"step {step}")
        state, tstate = ours.state(), theirs.state()
        assert list(state) == list(tstate)
        for key, value in tstate.items():
            _same(state[key], value, f"{key} after step {step}")
    # The flat vectors are the real dtype, twice as long as the complex parameters.
    state = ours.state()
    real = np.finfo(dtype).dtype
    assert state["d"].dtype == real and state["d"].size == 2 * 21 + (3 if mixed else 6)


def _relative(ours, theirs):
    """max |ours - torch| / max |torch| over a list of arrays (torch tensors or ndarrays)."""
    theirs = [t.numpy() if isinstance(t, torch.Tensor) else np.asarray(t) for t in theirs]
    scale = max(float(np.abs(t).max()) for t in theirs)
    return max(float(np.abs(np.asarray(o) - t).max()) for o, t in zip(ours, theirs)) / scale


# Measured (complex least squares, relative as above): params after each step 1.4e-7 / 5.4e-6
# (complex64, fixed / Wolfe; the Wolfe run takes one more evaluation than torch near the
# optimum), 2.1e-16 (complex128); the whole state after a 4-iteration step 5.4e-6 (complex64),
# 1.4e-15 (complex128). The bounds are the real dtypes' (TOLERANCE).
@pytest.mark.parametrize("line_search_fn", LINE_SEARCHES)
@pytest.mark.parametrize("dtype,mixed", COMPLEX_CASES, ids=["complex64", "complex128", "complex64+float32"])
def test_complex_least_squares_matches_torch(line_search_fn, dtype, mixed):
    tolerance = TOLERANCE[np.finfo(dtype).dtype.type]
    init, f = complex_least_squares(dtype, mixed=mixed)
    ours, theirs = Side("gradclip", init, f, line_search_fn=line_search_fn), Side("torch", init, f, line_search_fn=line_search_fn)
    for _ in range(3):
        assert ours.step() == pytest.approx(theirs.step(), rel=10 * tolerance)
        assert _relative(ours.values(), theirs.values()) <= tolerance
    assert f(*ours.values())[0] == pytest.approx(f(*theirs.values())[0], rel=10 * tolerance)
    # It solved the problem: the gradient at the result is tiny next to the first one.
    assert np.abs(f(*ours.values())[1][0]).max() < 1e-3 * np.abs(f(*init)[1][0]).max()

    # The state after one step that stops short of the optimum (near it the state holds
    # differences of nearly equal gradients, and relative errors mean nothing).
    kwargs = dict(line_search_fn=line_search_fn, max_iter=4, history_size=3)
    ours, theirs = Side("gradclip", init, f, **kwargs), Side("torch", init, f, **kwargs)
    ours.step(), theirs.step()
    state, tstate = ours.state(), theirs.state()
    assert list(state) == list(tstate)
    for key, value in tstate.items():
        if isinstance(value, torch.Tensor) and value.ndim == 1:
            assert state[key].dtype == value.numpy().dtype, key
            assert _relative([state[key]], [value]) <= tolerance, key
        elif isinstance(value, list):
            entries = [(o, t) for o, t in zip(state[key], value) if t is not None]
            assert len(state[key]) == len(value), key
            assert _relative([o for o, _ in entries], [t for _, t in entries]) <= tolerance, key
        elif isinstance(value, (torch.Tensor, float)):
            assert float(state[key]) == pytest.approx(float(value), rel=tolerance), key
        else:
            assert state[key] == value, key


def test_complex_none_gradient_reads_as_zero_pairs():
    p, q = Parameter(np.array([1 + 1j, 2 - 1j])), Parameter(np.array([3j]))
    tp, tq = torch.tensor([1 + 1j, 2 - 1j], dtype=torch.complex128), torch.tensor([3j], dtype=torch.complex128)
    # Two iterations on a quadratic: both move p (by O(1)), neither touches q.
    opt, topt = optim.LBFGS([p, q], max_iter=2), torch.optim.LBFGS([tp, tq], max_iter=2)
    target = np.array([0.5 + 2j, -1 - 0.25j])

    def closure():
        p.grad = 2 * (p.data - target) * np.array([1.0, 3.0])
        return float(np.sum(np.abs(p.data - target) ** 2 * np.array([1.0, 3.0])))

    def tclosure():
        tp.grad = torch.from_numpy(2 * (tp.detach().numpy() - target) * np.array([1.0, 3.0]))
        return float(np.sum(np.abs(tp.detach().numpy() - target) ** 2 * np.array([1.0, 3.0])))

    opt.step(closure), topt.step(tclosure)
    assert np.abs(p.data - np.array([1 + 1j, 2 - 1j])).min() > 0.05
    np.testing.assert_allclose(p.data, tp.numpy(), rtol=1e-14)
    np.testing.assert_array_equal(q.data, tq.numpy())
    assert opt.state[p]["d"].shape == topt.state[tp]["d"].shape == (6,)
    np.testing.assert_array_equal(opt.state[p]["d"][4:], 0)


def test_complex_parameters_must_share_the_real_dtype():
    with pytest.raises(TypeError, match="must share one dtype"):
        optim.LBFGS([Parameter(np.zeros(3, np.complex128)), Parameter(np.zeros(3, np.float32))])
    with pytest.raises(TypeError, match="must share one dtype"):
        optim.LBFGS([Parameter(np.zeros(3, np.complex128)), Parameter(np.zeros(3, np.complex64))])
    optim.LBFGS([Parameter(np.zeros(3, np.complex128)), Parameter(np.zeros(3, np.float64))])


# -- clip_and_step -------------------------------------------------------------------------


def test_clip_and_step_clips_every_evaluation():
    init, f = rnn(np.float64)
    a = Side("gradclip", init, f, line_search_fn="strong_wolfe")
    b = Side("gradclip", init, f, line_search_fn="strong_wolfe")
    norms = []

    def clipped():
        loss = b.closure()
        norms.append(gradclip.clip_grad_norm_(b.params, 0.5))
        return loss

    for _ in range(2):
        a.opt.clip_and_step(0.5, closure=a.closure)
        b.opt.step(clipped)
        for x, y in zip(a.values(), b.values()):
            np.testing.assert_array_equal(x, y)
    assert max(norms) > 0.5  # clipping fired
    for p in a.params:  # the gradients left behind are clipped ones
        assert p.grad is not None
    assert float(gradclip.get_total_norm([p.grad for p in a.params])) <= 0.5 * (1 + 1e-6)


# -- errors --------------------------------------------------------------------------------


def test_constructor_errors_like_torch():
    p, q = Parameter(np.zeros(3)), Parameter(np.zeros(2))
    tp, tq = torch.zeros(3), torch.zeros(2)
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        optim.LBFGS([p], lr=-1)
    with pytest.raises(ValueError, match="Invalid learning rate: -1"):
        torch.optim.LBFGS([tp], lr=-1)
    msg = r"LBFGS doesn't support per-parameter options \(parameter groups\)"
    with pytest.raises(ValueError, match=msg):
        optim.LBFGS([{"params": [p]}, {"params": [q]}])
    with pytest.raises(ValueError, match=msg):
        torch.optim.LBFGS([{"params": [tp]}, {"params": [tq]}])
    assert optim.LBFGS([p]).defaults == {k: v for k, v in torch.optim.LBFGS([tp]).defaults.items()}


def test_gradclip_specific_errors():
    with pytest.raises(TypeError, match="must share one dtype"):
        optim.LBFGS([Parameter(np.zeros(3)), Parameter(np.zeros(3, np.float32))])
    with pytest.raises(TypeError, match="gradclip.Parameter"):
        optim.LBFGS([np.zeros(3)])
    p = Parameter(np.ones(3))
    opt = optim.LBFGS([p], line_search_fn="nope")

    def closure():
        p.grad = np.ones(3)
        return 1.0

    with pytest.raises(RuntimeError, match="only 'strong_wolfe' is supported"):
        opt.step(closure)


def test_bad_gradient_raises_before_moving():
    p, q = Parameter(np.ones(3)), Parameter(np.ones((2, 2)))
    opt = optim.LBFGS([p, q])

    def closure():
        p.grad = np.ones(3)
        q.grad = np.ones((2, 2), np.float32)  # wrong dtype
        return 1.0

    with pytest.raises(TypeError, match="dtype"):
        opt.step(closure)
    assert (p.data == 1).all() and (q.data == 1).all()


def test_none_gradient_reads_as_zero():
    # torch's _gather_flat_grad: a parameter without a gradient contributes zeros.
    p, q = Parameter(np.ones(3)), Parameter(np.full(2, 5.0))
    tp, tq = torch.ones(3, dtype=torch.float64), torch.full((2,), 5.0, dtype=torch.float64)
    opt, topt = optim.LBFGS([p, q]), torch.optim.LBFGS([tp, tq])

    def closure():
        p.grad = 2 * p.data
        return float(np.sum(p.data**2))

    def tclosure():
        tp.grad = 2 * tp.detach().clone()
        return float((tp**2).sum())

    opt.step(closure), topt.step(tclosure)
    np.testing.assert_allclose(p.data, tp.numpy(), rtol=1e-14, atol=1e-300)
    np.testing.assert_array_equal(q.data, tq.numpy())


# -- the list algebra ----------------------------------------------------------------------

LAYOUTS = [
    lambda x: x,
    lambda x: np.asfortranarray(x),
    lambda x: x[::-1],
    lambda x: np.repeat(x, 2, axis=0)[::2],
]


def _lists(dtype, seed=0):
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (5,), (), (2, 3, 2), (0, 3)]
    return [np.asarray(rng.standard_normal(s) * 3).astype(dtype) for s in shapes]


@pytest.mark.parametrize("layout", range(len(LAYOUTS)))
@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_list_dot_is_accurate(dtype, layout):
    xs = [LAYOUTS[layout](x) if x.ndim else x for x in _lists(dtype, 0)]
    ys = [LAYOUTS[layout](y) if y.ndim else y for y in _lists(dtype, 1)]
    from fractions import Fraction

    exact = sum(
        (Fraction(float(a)) * Fraction(float(b)) for x, y in zip(xs, ys) for a, b in zip(x.ravel(), y.ravel())),
        Fraction(0),
    )
    got = _C.list_dot(xs, ys)
    assert abs(Fraction(got) - exact) <= abs(exact) * Fraction(2.0**-50)  # well under a float64 ulp x 8
    flat = np.concatenate([x.ravel() for x in xs])
    # A flat vector pairs with the list in C order (the summation order may differ by layout).
    assert np.dtype(dtype).type(_C.list_dot(flat, ys)) == np.dtype(dtype).type(got)
    assert np.dtype(dtype).type(got) == np.dtype(dtype).type(float(exact))


# float16 in every layout torch can hold (no negative strides), with the same strides in torch.
AXPY_CASES = [(np.float16, layout) for layout in (0, 1, 3)] + [
    (dt, layout) for dt in (np.float32, np.float64) for layout in range(len(LAYOUTS))
]


def _torch_like(a):
    """A tensor with a's values and strides, in memory of its own (contiguous where a has a
    negative stride, which torch cannot hold)."""
    if a.ndim == 0 or a.size == 0 or min(a.strides) < 0:
        return torch.from_numpy(np.ascontiguousarray(a).copy())
    extent = sum((size - 1) * stride for size, stride in zip(a.shape, a.strides)) // a.itemsize + 1
    t = torch.zeros(extent, dtype=torch.from_numpy(a[:0].copy()).dtype).as_strided(
        a.shape, [s // a.itemsize for s in a.strides]
    )
    t.copy_(torch.from_numpy(np.ascontiguousarray(a)))
    return t


def _bits(a):
    a = np.ascontiguousarray(a)
    return a.view({2: np.uint16, 4: np.uint32, 8: np.uint64}[a.itemsize])


@pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"), reason="torch fuses only with FMA"
)
@pytest.mark.parametrize("dtype,layout", AXPY_CASES)
@pytest.mark.parametrize("alpha", [0.3, -1.7, np.float32(0.1)])
def test_list_axpy_is_torchs_add(dtype, layout, alpha):
    lists = _lists
    if dtype == np.float16:
        # torch's float16 add is an fma in float only in its vectorised loop; its scalar loop
        # (the last length % 32 elements of each row it vectorises, every element of a tensor
        # with no unit-stride dim or of a 0-d one) rounds alpha * x to float16 first, and so
        # does gradclip: sizes with tails, and the small ones that are all tail.
        lists = lambda dtype, seed: [  # noqa: E731
            np.asarray(np.random.default_rng(seed).standard_normal(s) * 3).astype(dtype)
            for s in [(64,), (2, 64), (33,), (70, 3), (5, 37), (3, 4), (), (2, 3, 2), (0, 3)]
        ]
    ys = [LAYOUTS[layout](y) if y.ndim else y.copy() for y in lists(dtype, 0)]
    xs = lists(dtype, 1)
    expected = [_torch_like(y) for y in ys]
    for e, x in zip(expected, xs):
        e.add_(torch.from_numpy(x), alpha=float(alpha))
    _C.list_axpy(ys, alpha, xs)
    for y, e in zip(ys, expected):
        np.testing.assert_array_equal(_bits(y), _bits(e.numpy()))
    # From a flat vector, as LBFGS moves its parameters (torch adds a view of it shaped like
    # the parameter: contiguous, the same as xs).
    ys2 = [LAYOUTS[layout](y) if y.ndim else y.copy() for y in lists(dtype, 0)]
    _C.list_axpy(ys2, alpha, np.concatenate([x.ravel() for x in xs]))
    for y, e in zip(ys2, expected):
        np.testing.assert_array_equal(_bits(y), _bits(e.numpy()))


@pytest.mark.parametrize("layout", range(len(LAYOUTS)))
def test_list_copy_both_ways(layout):
    xs = [LAYOUTS[layout](x) if x.ndim else x for x in _lists(np.float32)]
    flat = np.full(sum(x.size for x in xs), np.nan, np.float32)
    _C.list_copy(flat, xs)
    np.testing.assert_array_equal(flat, np.concatenate([x.ravel() for x in xs]))
    back = [LAYOUTS[layout](np.zeros_like(x)) if x.ndim else np.zeros_like(x) for x in xs]
    _C.list_copy(back, flat)
    for a, b in zip(back, xs):
        np.testing.assert_array_equal(a, b)
    # Sources with a .grad; None reads as zeros shaped like .data.
    params = [Parameter(np.ones_like(x)) for x in xs]
    for p, x in zip(params, xs):
        p.grad = x
    params[1].grad = None
    _C.list_copy(flat, params)
    expected = [x.ravel() for x in xs]
    expected[1] = np.zeros(xs[1].size, np.float32)
    np.testing.assert_array_equal(flat, np.concatenate(expected))


def test_list_entry_points_refuse_bad_input_and_change_nothing():
    ys = [np.ones(3), np.ones((2, 2))]
    before = [y.copy() for y in ys]
    bad = [
        (ys, 1.0, [np.ones(3)]),  # lengths differ
        (ys, 1.0, [np.ones(3), np.ones(4)]),  # shapes differ
        (ys, 1.0, [np.ones(3), np.ones((2, 2), np.float32)]),  # dtypes differ
        (ys, 1.0, np.ones(6)),  # flat too short
        (ys, 1.0, np.ones(8)),  # flat too long
        (ys, 1.0, np.ones((7, 1))),  # flat not 1-D
        (ys, 1.0, np.ones(14)[::2]),  # flat not contiguous
        (ys, "x", np.ones(7)),  # alpha not a number
        (ys, 1.0, [np.ones(3), "x"]),
        (ys, 1.0, 3),
        ([np.ones(3)[::0] if False else np.broadcast_to(1.0, (3,)), ys[1]], 1.0, [np.ones(3), np.ones((2, 2))]),
        ([ys[0], ys[0][::-1].reshape(3)], 1.0, [ys[0], ys[0]]),  # shares memory within a pair
        ([np.ones(3, np.int64), ys[1]], 1.0, [np.ones(3), np.ones((2, 2))]),
    ]
    for args in bad:
        with pytest.raises((TypeError, ValueError)):
            _C.list_axpy(*args)
        for y, b in zip(ys, before):
            np.testing.assert_array_equal(y, b)
    with pytest.raises(TypeError):
        _C.list_dot([np.ones(3)], [object()])
    with pytest.raises(TypeError):
        _C.list_dot([np.ones(3)])
    with pytest.raises(ValueError):
        _C.list_copy(np.ones(3), [None])  # no shape for a None
    with pytest.raises(ValueError, match="read-only"):
        ro = np.ones(3)
        ro.flags.writeable = False
        _C.list_copy([ro], [np.zeros(3)])


# -- the list algebra on complex arrays: their real pairs (torch.view_as_real) --------------


def _complex_lists(dtype, layout, seed):
    rng = np.random.default_rng(seed)
    shapes = [(3, 4), (5,), (), (2, 3, 2), (0, 3)]
    out = []
    for s in shapes:
        z = np.asarray((rng.standard_normal(s) + 1j * rng.standard_normal(s)) * 3).astype(dtype)
        out.append(LAYOUTS[layout](z) if z.ndim else z)
    return out


def _as_real(z):
    # What torch.view_as_real gives: a real view of the same memory, parts last (any strides).
    return np.lib.stride_tricks.as_strided(z.real, z.shape + (2,), z.strides + (z.itemsize // 2,))


@pytest.mark.parametrize("layout", range(len(LAYOUTS)))
@pytest.mark.parametrize("dtype", COMPLEX)
def test_list_algebra_views_complex_arrays_as_real_pairs(dtype, layout):
    xs, ys = _complex_lists(dtype, layout, 0), _complex_lists(dtype, layout, 1)
    real = np.finfo(dtype).dtype
    # dot: the real dot product of the pairs, bit for bit what the real views give.
    got = _C.list_dot(xs, ys)
    assert got == _C.list_dot([_as_real(x) for x in xs], [_as_real(y) for y in ys])
    exact = sum(float(np.sum(_as_real(x).astype(np.float64) * _as_real(y).astype(np.float64))) for x, y in zip(xs, ys))
    assert got == pytest.approx(exact, rel=1e-12)
    # copy to a flat vector: torch's _gather_flat_grad (view_as_real(g).view(-1), concatenated).
    flat = np.full(sum(2 * x.size for x in xs), np.nan, real)
    _C.list_copy(flat, xs)
    expected = torch.cat([torch.view_as_real(torch.from_numpy(x.copy())).reshape(-1) for x in xs]).numpy()
    np.testing.assert_array_equal(flat, expected)
    # and back, and into complex arrays of the same layout from complex ones
    back = [LAYOUTS[layout](np.zeros_like(x)) if x.ndim else np.zeros_like(x) for x in xs]
    _C.list_copy(back, flat)
    for a, b in zip(back, xs):
        np.testing.assert_array_equal(a, b)
    # axpy from the flat vector: torch's _add_grad, view_as_real(p).add_(segment, alpha=)
    params = [y.copy() if y.ndim == 0 else LAYOUTS[layout](np.zeros_like(np.ascontiguousarray(y))) for y in ys]
    for q, y in zip(params, ys):
        q[...] = y  # the same values, in the layout under test
    tparams = [torch.from_numpy(np.ascontiguousarray(y).copy()) for y in ys]
    offset = 0
    for t in tparams:
        view = torch.view_as_real(t)
        view.add_(torch.from_numpy(flat[offset : offset + view.numel()]).view_as(view), alpha=-0.37)
        offset += view.numel()
    _C.list_axpy(params, -0.37, flat)
    for a, t in zip(params, tparams):
        np.testing.assert_array_equal(a, t.numpy())


def test_list_algebra_complex_errors_change_nothing():
    z = np.ones(3, np.complex128)
    before = z.copy()
    bad = [
        ([z], 1.0, [np.ones(3)]),  # complex paired with real
        ([z], 1.0, [np.ones(3, np.complex64)]),  # complex128 with complex64
        ([z], 1.0, np.ones(3)),  # flat of size, not 2 * size
        ([z], 1.0, np.ones(6, np.float32)),  # flat of the other precision
        ([z], 1.0, np.ones(3, np.complex128)),  # a flat vector is real
    ]
    for args in bad:
        with pytest.raises((TypeError, ValueError)):
            _C.list_axpy(*args)
        np.testing.assert_array_equal(z, before)
    _C.list_axpy([z], 1.0, np.ones(6))
    np.testing.assert_array_equal(z, before + (1 + 1j))


@pytest.mark.parametrize("dtype", [np.float16, np.float32, np.float64])
def test_list_dot_of_infinities_is_torchs(dtype):
    # An infinite product makes the sum inf (not the NaN a compensation term would give it),
    # inf - inf is NaN, as torch's dot.
    big = float(np.finfo(dtype).max)
    for x, y in [([np.inf, 1.0, 2.0], [1.0, 1.0, 1.0]), ([np.inf, -np.inf], [1.0, 1.0]), ([big, big], [1.0, 1.0])]:
        x, y = np.array(x).astype(dtype), np.array(y).astype(dtype)
        expected = torch.from_numpy(x).dot(torch.from_numpy(y)).item() if dtype != np.float16 else float(
            torch.from_numpy(x.astype(np.float32)).dot(torch.from_numpy(y.astype(np.float32)))
        )
        with np.errstate(over="ignore"):  # a float64 sum past the dtype's range rounds to inf
            got = dtype(_C.list_dot([x[:1], x[1:]], [y[:1], y[1:]]))
            np.testing.assert_array_equal(got, dtype(expected))
