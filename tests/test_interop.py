"""torch tensors and other DLPack arrays as gradients: in place, without copies, torch's numbers.

torch is a test requirement: these tests import it unconditionally.
"""

import subprocess
import sys
import types

import numpy as np
import pytest
import torch

import gradclip
from gradclip import _interop

pytestmark = pytest.mark.torch
RTOL = {torch.float32: 1e-6, torch.float64: 1e-12}


class Exporter:
    """A DLPack exporter other than torch: wraps an ndarray, optionally on a fake device."""

    def __init__(self, array, device=(1, 0)):
        self.array = array
        self.device = device

    def __dlpack__(self, **kwargs):
        return self.array.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self.device


NUMPY_1 = np.lib.NumpyVersion(np.__version__) < "2.0.0"


def read_only(array):
    """An array whose DLPack import is read-only. NumPy 1.x refuses to export a read-only
    array, but marks every import read-only: there a writable array does."""
    if not NUMPY_1:
        array.flags.writeable = False
    return array


def model(seed=0, dtype=torch.float32, scale=100.0):
    """A small torch model with gradients set (no autograd needed: gradients are given)."""
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Linear(7, 5), torch.nn.Tanh(), torch.nn.Linear(5, 3))
    net = net.to(dtype)
    for p in net.parameters():
        p.grad = torch.randn_like(p) * scale
    return net


def twin(net):
    other = model(dtype=next(net.parameters()).dtype)
    other.load_state_dict(net.state_dict())
    for p, q in zip(net.parameters(), other.parameters()):
        q.grad = None if p.grad is None else p.grad.clone()
    return other


# -- import ---------------------------------------------------------------------------------


def run_python(code):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout


def test_import_gradclip_gives_optim():
    out = run_python("import gradclip; print(gradclip.optim.SGD.__name__, gradclip.optim.Adam.__name__)")
    assert out.split() == ["SGD", "Adam"]


def test_gradclip_never_imports_torch_by_itself():
    code = (
        "import sys, numpy as np, gradclip, gradclip.optim, gradclip.nn.utils\n"
        "g = [np.ones(3), np.ones((2, 2), np.float32)]\n"
        "gradclip.clip_grad_norm_(g, 1.0); gradclip.get_total_norm(g)\n"
        "gradclip.clip_grad_value_(g, 0.1)\n"
        "p = gradclip.Parameter(np.zeros(3)); p.grad = np.ones(3)\n"
        "opt = gradclip.optim.Adam([p]); opt.step(); opt.state_dict()\n"
        "gradclip.clip_grad_norm_(np.ma.masked_array([1.0, 2.0]).data, 1.0)\n"
        "print('torch' in sys.modules)\n"
    )
    assert run_python(code).strip() == "False"


def test_import_gradclip_alone_registers_the_converter():
    code = (
        "import torch, gradclip\n"
        "p = torch.nn.Parameter(torch.zeros(2)); p.grad = torch.tensor([3.0, 4.0])\n"
        "print(float(gradclip.clip_grad_norm_([p], 1.0)), p.grad.tolist())\n"
    )
    total, grads = run_python(code).split(" ", 1)
    assert float(total) == 5.0
    np.testing.assert_allclose(eval(grads), [0.6, 0.8], rtol=1e-6)


# -- the converter itself ---------------------------------------------------------------------


@pytest.mark.parametrize("writable", [True, False])
def test_torch_tensor_is_viewed_not_copied(writable):
    t = torch.arange(12.0).reshape(3, 4)[:, ::2]  # strided float32
    a = _interop.convert(t, writable)
    assert type(a) is np.ndarray and a.flags.writeable
    assert a.ctypes.data == t.data_ptr() and a.strides == (16, 8)
    np.testing.assert_array_equal(a, t.numpy())


def test_tensor_that_requires_grad_is_read_but_never_written():
    p = torch.nn.Parameter(torch.ones(3))
    a = _interop.convert(p, False)
    assert a.ctypes.data == p.data_ptr()
    with pytest.raises(ValueError, match="requires grad in place: that would bypass autograd"):
        _interop.convert(p, True)


def test_conjugate_view_read_as_values_refused_in_place():
    z = torch.tensor([3 + 4j, 1j], dtype=torch.complex64).conj()
    np.testing.assert_array_equal(_interop.convert(z, False), [3 - 4j, -1j])
    with pytest.raises(ValueError, match="conjugate or negative bit"):
        _interop.convert(z, True)


def test_unsupported_torch_dtype_is_a_type_error():
    with pytest.raises(TypeError, match=r"dtype torch\.bfloat16 has no NumPy equivalent"):
        _interop.convert(torch.zeros(2, dtype=torch.bfloat16), False)


@pytest.mark.parametrize("writable", [True, False])
def test_non_cpu_tensor_refused(writable):
    with pytest.raises(ValueError, match="gradclip works on CPU memory, but got a torch.Tensor on device meta"):
        _interop.convert(torch.zeros(2, device="meta"), writable)


def test_sparse_tensor_refused():
    with pytest.raises(TypeError, match="dense"):
        _interop.convert(torch.zeros(2, 2).to_sparse(), False)


@pytest.mark.parametrize("device", [(2, 0), (13, 1), (99, 0)])
def test_non_cpu_dlpack_refused(device):
    with pytest.raises(ValueError, match="gradclip works on CPU memory.*device"):
        _interop.convert(Exporter(np.zeros(2), device), False)


def test_read_only_export_for_norms_only():
    x = Exporter(read_only(np.array([3.0, 4.0])))
    a = _interop.convert(x, False)
    assert not a.flags.writeable and a.ctypes.data == x.array.ctypes.data
    with pytest.raises(ValueError, match="exported read-only"):
        _interop.convert(x, True)


def test_masked_array_refused():
    m = np.ma.masked_array([1.0, 1e9], mask=[False, True])
    for writable in (True, False):
        with pytest.raises(TypeError, match="MaskedArray is not supported: its mask would be ignored"):
            _interop.convert(m, writable)


class Sub(np.ndarray):
    pass


def test_other_ndarray_subclasses_viewed():
    m = np.array([[3.0, 4.0]]).view(Sub)
    a = _interop.convert(m, True)
    assert type(a) is np.ndarray and np.shares_memory(a, m)


@pytest.mark.parametrize("obj", [[1.0, 2.0], "abc", 3.0, object()])
def test_unknown_objects_returned_unchanged(obj):
    assert _interop.convert(obj, True) is obj


# -- through the public functions ---------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("norm_type", [2.0, 1.0, float("inf")])
@pytest.mark.parametrize("scale", [100.0, 1e-3], ids=["clipping", "not-clipping"])
def test_clip_torch_model_parameters_in_place(dtype, norm_type, scale):
    net = model(dtype=dtype, scale=scale)
    ref = twin(net)
    buffers = [(p.grad, p.grad.data_ptr()) for p in net.parameters()]

    ours = gradclip.clip_grad_norm_(net.parameters(), 5.0, norm_type)
    theirs = torch.nn.utils.clip_grad_norm_(ref.parameters(), 5.0, norm_type)

    np.testing.assert_allclose(float(ours), theirs.item(), rtol=RTOL[dtype])
    for (grad, ptr), p, q in zip(buffers, net.parameters(), ref.parameters()):
        assert p.grad is grad and p.grad.data_ptr() == ptr  # the same tensor, written in place
        np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=RTOL[dtype], atol=0)
    if scale == 100.0:
        assert float(gradclip.get_total_norm([p.grad for p in net.parameters()], norm_type)) <= 5.0


def test_same_total_gives_torchs_gradients_bit_for_bit():
    net = model()
    ref = twin(net)
    theirs = torch.nn.utils.clip_grad_norm_(ref.parameters(), 5.0)
    gradclip.clip_grads_with_norm_(list(net.parameters()), 5.0, theirs.numpy())
    for p, q in zip(net.parameters(), ref.parameters()):
        assert torch.equal(p.grad, q.grad)


def test_single_tensor_is_one_parameter():
    p = torch.nn.Parameter(torch.zeros(4, 3))
    p.grad = torch.full((4, 3), 2.0)
    total = gradclip.clip_grad_norm_(p, 1.0)  # not iterated row by row
    np.testing.assert_allclose(float(total), np.sqrt(48.0), rtol=1e-6)
    np.testing.assert_allclose(p.grad.norm().item(), 1.0, rtol=1e-5)
    g = torch.full((4, 3), 2.0)
    np.testing.assert_allclose(float(gradclip.get_total_norm(g)), np.sqrt(48.0), rtol=1e-6)
    gradclip.clip_grad_value_(p, 0.1)
    assert torch.all(p.grad <= 0.1)


def test_generator_of_parameters_and_skipped_none():
    net = model()
    next(net.parameters()).grad = None
    ref = twin(net)
    ours = gradclip.clip_grad_norm_((p for p in net.parameters()), 1.0)
    theirs = torch.nn.utils.clip_grad_norm_(ref.parameters(), 1.0)
    np.testing.assert_allclose(float(ours), theirs.item(), rtol=1e-6)
    assert next(net.parameters()).grad is None


def test_torch_parameters_and_arrays_mixed():
    p = torch.nn.Parameter(torch.zeros(2))
    p.grad = torch.tensor([3.0, 0.0])
    a = np.array([0.0, 4.0], dtype=np.float32)
    assert float(gradclip.clip_grad_norm_([p, a], 1.0)) == pytest.approx(5.0)
    np.testing.assert_allclose(p.grad.numpy(), [0.6, 0.0], rtol=1e-6)
    np.testing.assert_allclose(a, [0.0, 0.8], rtol=1e-6)


def test_a_tensor_in_parameters_is_a_parameter_as_in_torch():
    # torch.nn.utils.clip_grad_norm_([t]) uses t.grad: a tensor without one is skipped.
    t = torch.tensor([3.0, 4.0])
    assert float(gradclip.clip_grad_norm_([t], 1.0)) == 0.0
    assert torch.nn.utils.clip_grad_norm_([t.clone()], 1.0).item() == 0.0
    assert torch.equal(t, torch.tensor([3.0, 4.0]))
    # get_total_norm takes the tensors themselves, as torch's does.
    assert float(gradclip.get_total_norm([t])) == pytest.approx(5.0)


def test_clip_grad_value_matches_torch():
    net = model()
    ref = twin(net)
    gradclip.clip_grad_value_(net.parameters(), 30.0)
    torch.nn.utils.clip_grad_value_(ref.parameters(), 30.0)
    for p, q in zip(net.parameters(), ref.parameters()):
        assert torch.equal(p.grad, q.grad)


def test_read_only_export_accepted_by_norm_refused_in_place_untouched():
    x = Exporter(read_only(np.array([3.0, 4.0])))
    w = np.array([1.0, 1.0])
    assert float(gradclip.get_total_norm([x, w])) == pytest.approx(np.sqrt(27.0))
    for clip in (lambda: gradclip.clip_grad_norm_([w, x], 1.0),
                 lambda: gradclip.clip_grad_value_([w, x], 0.5)):
        with pytest.raises(ValueError, match="exported read-only"):
            clip()
        np.testing.assert_array_equal(w, [1.0, 1.0])  # validated before the first write


def test_gradient_that_requires_grad_refused_in_place_read_by_norm():
    # backward(create_graph=True) leaves gradients that require grad (a graph to differentiate).
    w = torch.nn.Parameter(torch.ones(2))
    (w ** 2).sum().backward(create_graph=True)
    assert w.grad.requires_grad
    q = torch.nn.Parameter(torch.zeros(2))
    q.grad = torch.ones(2)
    assert float(gradclip.get_total_norm([w.grad, q.grad])) == pytest.approx(np.sqrt(10.0))
    assert float(gradclip.get_total_norm([w])) == pytest.approx(np.sqrt(2.0))  # the values
    for clip in (lambda: gradclip.clip_grad_norm_([q, w], 1.0),
                 lambda: gradclip.clip_grads_with_norm_([q, w], 1.0, 10.0),
                 lambda: gradclip.clip_grad_value_([q, w], 0.5)):
        with pytest.raises(ValueError, match="requires grad in place"):
            clip()
        assert torch.equal(q.grad, torch.ones(2)) and torch.equal(w.grad.detach(), torch.full((2,), 2.0))


def test_errors_for_non_cpu_and_masked_leave_everything_untouched():
    g = np.ones(3)
    with pytest.raises(ValueError, match="CPU memory"):
        gradclip.clip_grad_norm_([g, Exporter(np.ones(2), (2, 0))], 0.1)
    p = gradclip.Parameter(np.zeros(3))
    p.grad = g
    m = np.ma.masked_array(np.ones(2), mask=[True, False])
    with pytest.raises(TypeError, match="MaskedArray"):
        gradclip.clip_grad_norm_([p, m], 0.1)
    with pytest.raises(TypeError, match="MaskedArray"):
        gradclip.get_total_norm(m)
    np.testing.assert_array_equal(g, np.ones(3))


def test_exception_from_dlpack_propagates():
    class Broken(Exporter):
        def __dlpack__(self, **kwargs):
            raise KeyError("from the exporter")

    with pytest.raises(KeyError, match="from the exporter"):
        gradclip.get_total_norm([Broken(np.ones(2))])


# -- exact torch.Tensor items are viewed from C ----------------------------------------------


class CountingConverter:
    def __init__(self):
        self.seen = []

    def __call__(self, obj, writable):
        self.seen.append(type(obj))
        return _interop.convert(obj, writable)


class TensorSubclass(torch.Tensor):
    pass


def test_exact_tensors_are_viewed_in_c_and_the_rest_by_the_converter():
    """Once torch has been seen, an exact torch.Tensor (p.grad) is viewed with numpy() from C;
    the converter still handles what numpy() refuses (and says why) and every other type."""
    net = model(scale=100.0)
    torch_net = twin(net)
    gradclip.clip_grad_norm_(torch.zeros(1), 1.0)  # torch now known to gradclip._interop
    counting = CountingConverter()
    gradclip._C._set_converter(counting)
    try:
        ours = gradclip.clip_grad_norm_(net.parameters(), 1.0)
        assert counting.seen == []
        theirs = torch.nn.utils.clip_grad_norm_(torch_net.parameters(), 1.0)
        assert float(ours) == pytest.approx(float(theirs), rel=1e-6)
        for p, q in zip(net.parameters(), torch_net.parameters()):
            np.testing.assert_allclose(p.grad.numpy(), q.grad.numpy(), rtol=1e-6)
        held = next(net.parameters()).grad
        refs = sys.getrefcount(held)
        for _ in range(100):
            gradclip.clip_grad_value_(net.parameters(), 0.5)
        assert sys.getrefcount(held) == refs  # the views are released
        # numpy() refuses a tensor that requires grad: the converter runs and explains.
        p = torch.nn.Parameter(torch.ones(3))
        p.grad = torch.ones(3, requires_grad=True)
        before = p.grad.detach().clone()
        with pytest.raises(ValueError, match="requires grad in place"):
            gradclip.clip_grad_value_([p], 0.5)
        assert counting.seen == [torch.Tensor]
        assert torch.equal(p.grad.detach(), before)
        # A subclass is not viewed from C: its numpy() is user code.
        sub = torch.ones(4).as_subclass(TensorSubclass)
        assert float(gradclip.get_total_norm([sub])) == 2.0
        assert counting.seen[-1] is TensorSubclass
    finally:
        _interop.register(gradclip._C)


def test_no_converter_means_no_conversion_of_tensors_either():
    gradclip.get_total_norm([torch.ones(1)])  # torch known to gradclip._interop
    gradclip._C._set_converter(None)
    try:
        with pytest.raises(TypeError, match="must be a NumPy ndarray, not Tensor; pass its .numpy()"):
            gradclip.get_total_norm([torch.ones(4)])
    finally:
        _interop.register(gradclip._C)
    assert float(gradclip.get_total_norm([torch.ones(4)])) == 2.0


def test_tensor_type_switch_takes_only_types():
    with pytest.raises(TypeError, match="must be a type or None"):
        gradclip._C._set_tensor_type(torch.zeros(1))
    gradclip._C._set_tensor_type(None)
    try:
        assert float(gradclip.get_total_norm([torch.ones(4)])) == 2.0  # the converter alone
    finally:
        _interop.register(gradclip._C)


# -- exact tensors described through DLPack's C exchange API ----------------------------------

HAS_EXCHANGE_API = hasattr(torch.Tensor, "__dlpack_c_exchange_api__")


class CountingNumpy:
    """Replaces torch.Tensor.numpy for a test and counts its calls (C calls it by name)."""

    def __init__(self, monkeypatch):
        self.calls = 0
        original = torch.Tensor.numpy

        def numpy(tensor, *args, **kwargs):
            self.calls += 1
            return original(tensor, *args, **kwargs)

        monkeypatch.setattr(torch.Tensor, "numpy", numpy)


def tensor_layouts(dtype):
    """Tensors of every layout the fast path takes, with values that clip."""
    g = torch.Generator().manual_seed(5)
    base = (torch.randn(6, 8, generator=g, dtype=torch.float64) * 3).to(dtype)
    return {
        "contiguous": base.clone(),
        "transposed": base.clone().t(),  # Fortran order
        "strided": base.clone()[:, ::3],
        "offset": base.clone()[2:, 1:],
        "negative-free 3-d": base.clone().reshape(2, 3, 8).permute(2, 0, 1),
        "0-d": base.clone()[1, 1],
        "one element": base.clone()[:1, :1],
        "empty": base.clone()[:0],
    }


def as_arrays(tensors):
    """ndarray views of the tensors' memory: the same values in the same layout (a copy in C
    order would change the order of a reduction, and so the last bit of a norm)."""
    return [t.numpy() for t in tensors]


def holders(grads):
    """Parameters for the clipping functions: objects whose .grad is the given tensor (a tensor
    in `parameters` is a parameter, as in torch: its own .grad would be used)."""
    return [types.SimpleNamespace(grad=g) for g in grads]


@pytest.mark.skipif(not HAS_EXCHANGE_API, reason="this torch has no DLPack C exchange API")
@pytest.mark.parametrize("dtype", [torch.float16, torch.float32, torch.float64])
def test_exact_tensors_are_described_without_numpy_same_bits_as_ndarrays(dtype, monkeypatch):
    gradclip.get_total_norm([torch.ones(1)])  # torch known to gradclip._interop
    counting = CountingNumpy(monkeypatch)
    layouts = tensor_layouts(dtype)
    tensors = list(layouts.values())
    arrays = as_arrays(tensors)
    for norm_type in (2.0, 1.0, float("inf"), 3.0):
        some = slice(None, -1) if norm_type == float("inf") else slice(None)  # inf: no empty array
        counting.calls = 0
        total, norms = gradclip.get_total_norm(tensors[some], norm_type), gradclip.get_norms(tensors[some], norm_type)
        assert counting.calls == 0
        assert np.array_equal(total, gradclip.get_total_norm(arrays[some], norm_type)), norm_type
        assert np.array_equal(norms, gradclip.get_norms(arrays[some], norm_type)), norm_type
    for clip in (
        lambda xs: gradclip.clip_grad_norm_(xs, 1.0),
        lambda xs: gradclip.clip_grad_value_(xs, 0.5),
        lambda xs: gradclip.clip_grads_with_norm_(xs, 1.0, 7.0),
        lambda xs: gradclip.clip_grad_norm_(xs, 1.0, return_info=True).clip_coef,
    ):
        fresh = list(tensor_layouts(dtype).values())  # the same layouts, unclipped
        reference = as_arrays(tensor_layouts(dtype).values())  # and a second such set
        pointers = [t.data_ptr() for t in fresh]
        counting.calls = 0
        ours = clip(holders(fresh))
        assert counting.calls == 0
        assert np.array_equal(np.asarray(ours), np.asarray(clip(reference)))
        for t, a, ptr in zip(fresh, reference, pointers):
            assert t.data_ptr() == ptr  # in place, no copy
            assert np.array_equal(t.numpy(), a)


@pytest.mark.skipif(not HAS_EXCHANGE_API, reason="this torch has no DLPack C exchange API")
@pytest.mark.parametrize("dtype", [torch.complex64, torch.complex128])
def test_complex_tensors_are_described_without_numpy(dtype, monkeypatch):
    gradclip.get_total_norm([torch.ones(1)])
    def strided():
        return torch.randn(5, 4, generator=torch.Generator().manual_seed(7), dtype=dtype)[:, ::2]

    z, reference = strided(), strided().numpy()  # the same values in the same layout
    counting = CountingNumpy(monkeypatch)
    assert np.array_equal(gradclip.get_total_norm([z]), gradclip.get_total_norm([reference]))
    gradclip.clip_grad_norm_(holders([z]), 0.5)
    gradclip.clip_grad_norm_([reference], 0.5)
    assert counting.calls == 0
    assert np.array_equal(z.numpy(), reference)
    with pytest.raises(TypeError, match="complex"):  # clip_grad_value_ takes no complex
        gradclip.clip_grad_value_(holders([z]), 0.5)


def test_tensors_numpy_would_refuse_go_the_old_way(monkeypatch):
    """What numpy() refuses is never described directly: requires_grad, a negative or
    conjugate bit, bfloat16, sparse, another device. The converter reads or refuses them as it
    did, and an in-place call modifies nothing."""
    gradclip.get_total_norm([torch.ones(1)])
    neg = torch._neg_view(torch.tensor([3.0, -4.0]))  # values -3, 4; memory 3, -4
    assert float(gradclip.get_total_norm([neg])) == 5.0
    assert float(gradclip.get_total_norm([neg], 1.0)) == 7.0
    conj = torch.tensor([3 + 4j], dtype=torch.complex64).conj()
    assert float(gradclip.get_total_norm([conj])) == 5.0
    plain = torch.ones(3)
    for bad, error in [
        (neg, "conjugate or negative bit"),
        (conj, "conjugate or negative bit"),
        (torch.ones(3, requires_grad=True), "requires grad in place"),
    ]:
        before = plain.clone()
        with pytest.raises(ValueError, match=error):
            gradclip.clip_grad_norm_(holders([plain, bad]), 1e-3)  # the good one first: untouched
        assert torch.equal(plain, before)
    with pytest.raises(TypeError, match=r"torch\.bfloat16 has no NumPy equivalent"):
        gradclip.get_total_norm([plain, torch.ones(2, dtype=torch.bfloat16)])
    with pytest.raises(TypeError, match="has dtype int64"):
        gradclip.get_total_norm([plain, torch.ones(2, dtype=torch.int64)])
    with pytest.raises(TypeError, match="dense"):
        gradclip.get_total_norm([plain, torch.ones(2).to_sparse()])
    with pytest.raises(ValueError, match="on device meta"):
        gradclip.get_total_norm([plain, torch.ones(2, device="meta")])
    with pytest.raises(ValueError, match="share memory"):
        gradclip.clip_grad_value_(holders([torch.ones(1).expand(4)]), 0.5)
    assert float(gradclip.get_total_norm([torch.ones(1).expand(4)])) == 2.0


class RebindingGrad:
    """An item whose .grad property changes another tensor first: Python code that runs
    between the moment that tensor was taken and the moment it is validated."""

    def __init__(self, victim, change):
        self.victim, self.change = victim, change
        self.own = torch.full((2,), 10.0)

    @property
    def grad(self):
        self.change(self.victim)
        return self.own


def test_a_tensor_changed_by_a_later_items_property_is_judged_as_it_is_then():
    gradclip.get_total_norm([torch.ones(1)])
    victim = torch.full((3,), 10.0)
    before = victim.clone()
    with pytest.raises(ValueError, match="requires grad in place"):
        gradclip.clip_grad_norm_([*holders([victim]), RebindingGrad(victim, lambda t: t.requires_grad_(True))], 1.0)
    assert torch.equal(victim.detach(), before)
    victim = torch.full((3,), 10.0)
    with pytest.raises(TypeError, match="has dtype int64"):
        gradclip.clip_grad_norm_([*holders([victim]), RebindingGrad(victim, lambda t: setattr(t, "data", t.data.long()))], 1.0)
    # Rebound to other float memory: the new memory is what is clipped.
    victim = torch.full((3,), 10.0)
    other = torch.full((4,), 10.0)
    total = gradclip.clip_grad_norm_([*holders([victim]), RebindingGrad(victim, lambda t: setattr(t, "data", other))], 1.0)
    assert float(total) == pytest.approx(np.sqrt(4 * 100.0 + 2 * 100.0), rel=1e-6)
    assert victim.data_ptr() == other.data_ptr()
    np.testing.assert_allclose(other.numpy(), 10.0 / float(total), rtol=1e-6)


class NoExchangeApi(torch.Tensor):
    __dlpack_c_exchange_api__ = None  # as a torch older than the C exchange API


def test_a_tensor_type_without_the_exchange_api_is_viewed_with_numpy(monkeypatch):
    gradclip.get_total_norm([torch.ones(1)])
    gradclip._C._set_tensor_type(NoExchangeApi)
    try:
        counting = CountingNumpy(monkeypatch)
        t = torch.full((4,), 3.0).as_subclass(NoExchangeApi)
        gradclip.clip_grad_norm_(holders([t]), 1.0)
        assert counting.calls >= 1  # (a subclass's numpy() counts again in __torch_function__)
        np.testing.assert_allclose(t.numpy(), 0.5, rtol=1e-6)
    finally:
        _interop.register(gradclip._C)


@pytest.mark.skipif(not HAS_EXCHANGE_API, reason="this torch has no DLPack C exchange API")
def test_described_tensors_keep_their_reference_counts():
    gradclip.get_total_norm([torch.ones(1)])
    tensors = [torch.ones(5) for _ in range(20)]
    params = holders(tensors)
    counts = [sys.getrefcount(t) for t in tensors]
    for _ in range(50):
        gradclip.get_total_norm(tensors)
        gradclip.clip_grad_norm_(params, 1.0)
        gradclip.clip_grad_value_(params, 0.5)
        with pytest.raises(ValueError):  # the second collection, after the first let go
            gradclip.clip_grad_value_(params + holders([torch.ones(2, requires_grad=True)]), 0.5)
    assert [sys.getrefcount(t) for t in tensors] == counts


def test_errors_with_tensors_held_are_the_old_ways_errors_in_its_order():
    """The converter's errors come from reading the items, before any array is validated: a
    list with a read-only array first and a tensor that requires grad after it fails on the
    tensor, as it always has; with only the array at fault, on the array."""
    gradclip.get_total_norm([torch.ones(1)])
    frozen = np.ones(3)
    frozen.flags.writeable = False
    plain = torch.ones(3)
    with pytest.raises(ValueError, match="cannot modify a torch.Tensor that requires grad in place"):
        gradclip.clip_grad_value_([frozen, *holders([torch.ones(2, requires_grad=True)])], 0.5)
    with pytest.raises(ValueError, match=r"parameters\[0\] is read-only"):
        gradclip.clip_grad_value_([frozen, *holders([plain])], 0.5)
    assert torch.equal(plain, torch.ones(3))
    with pytest.raises(ValueError, match=r"parameters\[1\]\.grad has elements that share memory"):
        gradclip.clip_grad_value_(holders([plain, torch.ones(1).expand(3)]), 0.5)


# -- what the review of the DLPack path found: nothing may free a described tensor's memory ----


def test_under_a_torch_function_mode_tensors_go_the_old_way():
    """A mode's __torch_function__ is Python code that the flag checks (requires_grad,
    is_neg) would run after tensors were described: with a mode on, every tensor is viewed
    the old way, and a mode that rebinds an earlier tensor cannot make gradclip write into
    freed memory."""
    from torch.overrides import TorchFunctionMode

    gradclip.get_total_norm([torch.ones(1)])
    n = 1 << 12
    a, b = torch.full((n,), 5.0), torch.full((4,), 5.0)
    seen, victims = [], []

    class Rebinding(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            seen.append(getattr(func, "__name__", str(func)))
            if args and args[0] is b and not victims:
                a.data = torch.zeros(n)  # a's first storage is freed
                victims.append(torch.full((n,), 5.0))  # likely in that memory
            return func(*args, **(kwargs or {}))

    with Rebinding():
        gradclip.clip_grad_value_(holders([a, b]), 1.0)
    assert "numpy" in seen
    assert all(float(v.max()) == 5.0 for v in victims)
    assert float(b.max()) == 1.0


def test_a_garbage_collection_inside_the_call_cannot_free_a_described_tensor():
    import gc

    gradclip.get_total_norm([torch.ones(1)])
    n = 1 << 12
    a = torch.full((n,), 5.0)
    victims = []

    def callback(phase, info):
        if phase == "start" and len(victims) < 50:
            a.set_(torch.full((n,), 5.0))  # frees a's previous storage
            victims.append(torch.full((n,), 5.0))

    gc.collect()
    gc.callbacks.append(callback)
    threshold = gc.get_threshold()
    gc.set_threshold(1)
    try:
        for _ in range(5):  # until a collection has run inside a call
            info = gradclip.clip_grad_norm_(holders([a]), 1.0, return_info=True)
            if victims:
                break
    finally:
        gc.set_threshold(*threshold)
        gc.callbacks.remove(callback)
    assert victims and info.clipped  # collections did run inside the call
    assert all(float(v.max()) == 5.0 for v in victims)  # and none made it write freed memory


def test_the_storages_held_during_a_call_are_let_go():
    gradclip.get_total_norm([torch.ones(1)])
    ts = [torch.full((5,), 3.0), torch.full((2, 3), 3.0)[:, 1]]
    storages = [t.untyped_storage() for t in ts]
    before = [sys.getrefcount(s) for s in storages]
    for _ in range(200):
        gradclip.clip_grad_value_(holders(ts), 1.0)
        gradclip.clip_grad_norm_(holders(ts), 1.0, return_info=True)
        gradclip.get_total_norm(ts)
    assert [sys.getrefcount(s) for s in storages] == before
    assert float(ts[0].max()) <= 1.0


def test_another_thread_swapping_storage_cannot_crash_a_call(tmp_path):
    """Another thread inside torch's C++ (the GIL released) swaps the tensor's storage with
    t.set_(), which frees the old one unless something else holds it: gradclip holds the
    untyped storage of every tensor it describes through DLPack until its kernels are done
    (without that this crashed in ~1 of 5 full runs: the kernels had only the GIL)."""
    script = tmp_path / "race.py"
    script.write_text(
        "import threading, time, torch, gradclip\n"
        "from types import SimpleNamespace as NS\n"
        "torch.set_num_threads(1)\n"
        "t = torch.ones(1 << 22)\n"
        "stop = False\n"
        "def swap():\n"
        "    while not stop:\n"
        "        t.set_(torch.ones(1 << 22))\n"
        "th = threading.Thread(target=swap); th.start()\n"
        "end, calls = time.time() + 1.5, 0\n"
        "while time.time() < end:\n"
        "    gradclip.clip_grad_value_([NS(grad=t)], 0.5); calls += 1\n"
        "stop = True; th.join(); print('ok', calls)\n"
    )
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and done.stdout.startswith("ok"), (done.returncode, done.stderr[-2000:])


def test_tensors_without_memory_are_refused():
    gradclip.get_total_norm([torch.ones(1)])
    with pytest.raises(TypeError, match="no memory of its own"):
        gradclip.get_total_norm([torch._efficientzerotensor(3)])

    def inner(x):
        with pytest.raises(TypeError, match="no memory of its own"):
            gradclip.clip_grad_value_(holders([x]), 0.5)
        with pytest.raises(TypeError, match="no memory of its own"):
            gradclip.get_total_norm([x])
        return x + 1

    torch.func.functionalize(inner)(torch.full((3,), 2.0))


def test_every_grad_property_runs_once_and_errors_are_the_old_ones():
    gradclip.get_total_norm([torch.ones(1)])
    calls = []

    class Counting:
        def __init__(self, g):
            self.g = g

        @property
        def grad(self):
            calls.append(1)
            return self.g

    gradclip.clip_grad_norm_([Counting(torch.ones(3)), Counting(np.ones(3)), Counting(torch.ones(3))], 1.0)
    assert len(calls) == 3
    calls.clear()
    frozen = np.ones(3)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match=r"parameters\[1\]\.grad is read-only"):
        gradclip.clip_grad_norm_([Counting(torch.ones(3)), Counting(frozen)], 1.0)
    assert len(calls) == 2
    # A resolve error after a tensor the old way refuses: the tensor's error, as before.
    with pytest.raises(ValueError, match="requires grad in place"):
        gradclip.clip_grad_value_([*holders([torch.ones(3, requires_grad=True)]), types.SimpleNamespace(grad="x")], 1.0)

    class Raising:
        @property
        def grad(self):
            raise KeyError("boom")

    with pytest.raises(ValueError, match="conjugate or negative bit"):
        gradclip.clip_grad_norm_([*holders([torch.ones(2, dtype=torch.cfloat).conj()]), Raising()], 1.0)
    with pytest.raises(KeyError):
        gradclip.clip_grad_norm_([*holders([torch.ones(2)]), Raising()], 1.0)


def test_no_grad_does_not_make_a_tensor_that_requires_grad_writable():
    gradclip.get_total_norm([torch.ones(1)])
    t = torch.full((3,), 5.0, requires_grad=True)
    with torch.no_grad():
        with pytest.raises(ValueError, match="requires grad in place"):
            gradclip.clip_grad_value_(holders([t]), 1.0)
        assert float(gradclip.get_total_norm([t])) == pytest.approx(np.sqrt(75.0))
    assert torch.equal(t.detach(), torch.full((3,), 5.0))
