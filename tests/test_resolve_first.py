"""No user code runs between an array's validation and its use (issue 10, item 1).

A `.grad` property runs arbitrary Python while a call gathers its arrays. It may resize, re-flag
or replace an array the call has already seen; the call must then work on the arrays as they are
once every item is resolved (or refuse them), never on a freed buffer or an array made
read-only. Each case runs in a child process, so a crash fails the test instead of the run.
"""

import subprocess
import sys
import textwrap

import pytest

PRELUDE = """
import numpy as np
import gradclip
from gradclip import optim

class Sneaky:
    '''An item whose .grad runs `action` (on the arrays seen before it) and returns `grad`.'''
    def __init__(self, grad, action):
        self._grad, self._action = grad, action
    @property
    def grad(self):
        self._action()
        return self._grad

class SneakyParameter(gradclip.Parameter):
    __slots__ = ("_action", "_grad_value")
    @property
    def grad(self):
        self._action()
        return self._grad_value
    @grad.setter
    def grad(self, value):
        self._grad_value = value

def run(call):
    try:
        call()
    except (ValueError, TypeError) as exc:
        print("refused:", type(exc).__name__, exc)
    else:
        print("done")
"""

ENTRY_POINTS = {
    "clip_grad_norm_": "gradclip.clip_grad_norm_(items, 1.0)",
    "clip_grad_value_": "gradclip.clip_grad_value_(items, 0.5)",
    "clip_grads_with_norm_": "gradclip.clip_grads_with_norm_(items, 1.0, 10.0)",
    "get_total_norm via parameters": "gradclip.nn.utils.clip_grad_norm_(items, 1e9)",
}


def run_child(body: str) -> str:
    code = PRELUDE + textwrap.dedent(body)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"child died (rc={proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc.stdout


@pytest.mark.parametrize("call", ENTRY_POINTS.values(), ids=ENTRY_POINTS.keys())
def test_resize_of_an_earlier_gradient(call):
    # The first gradient's buffer is freed and replaced by a larger one while the second item
    # is resolved; the call must use the new buffer (size 4096), not the freed one.
    out = run_child(f"""
        g0 = np.full(1000, 3.0)
        g1 = np.full(10, 2.0)
        items = [g0, Sneaky(g1, lambda: g0.resize(4096, refcheck=False))]
        run(lambda: {call})
        assert g0.shape == (4096,)
        print("sum", float(np.abs(g0[1000:]).sum()))
    """)
    assert "done" in out


@pytest.mark.parametrize("call", ["clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_"])
def test_earlier_gradient_made_read_only_is_refused(call):
    out = run_child(f"""
        g0 = np.full(8, 3.0)
        g1 = np.full(8, 2.0)
        before = g1.copy()
        def freeze():
            g0.flags.writeable = False
        items = [g0, Sneaky(g1, freeze)]
        run(lambda: {ENTRY_POINTS[call]})
        assert (g0 == 3.0).all() and (g1 == before).all(), "modified although refused"
    """)
    assert "refused: ValueError" in out and "read-only" in out


def test_replaced_list_item_is_not_read_after_validation():
    # The property empties the list; the call keeps the arrays it resolved, alive.
    out = run_child("""
        g0 = np.full(100, 3.0)
        items = [g0, None]
        items[1] = Sneaky(np.full(100, 4.0), lambda: items.clear())
        total = gradclip.clip_grad_norm_(items, 1.0)
        assert np.isclose(total, np.sqrt(100 * 9 + 100 * 16)), total
        assert np.isclose(np.sqrt((g0 ** 2).sum()), 3 / 5, rtol=1e-6)
        print("done")
    """)
    assert "done" in out


def test_optimizer_gathers_before_validating():
    out = run_child("""
        p0 = gradclip.Parameter(np.zeros(1000)); p0.grad = np.full(1000, 1.0)
        p1 = SneakyParameter(np.zeros(10)); p1.grad = np.full(10, 1.0)
        p1._action = lambda: p0.grad.resize(4096, refcheck=False)
        opt = optim.SGD([p0, p1], lr=0.1)
        run(lambda: opt.step())          # p0.grad has a new shape: refused, nothing changed
        assert (p0.data == 0).all() and (p1.data == 0).all()
        p1._action = lambda: setattr(p0.grad.flags, "writeable", False)
        run(lambda: opt.clip_and_step(1.0))   # write_back needs a writable gradient
        assert (p0.data == 0).all() and (p1.data == 0).all()
    """)
    assert out.count("refused") == 2, out


# A list of exact ndarrays is described as it is walked (nothing can run Python code there);
# an array that fails its checks, or an item that could run code, hands the describing back to
# a pass after every item is resolved. Errors keep that order: resolving first, then checks.
class _RaisingGrad:
    @property
    def grad(self):
        raise RuntimeError("boom from .grad")


@pytest.mark.parametrize("call", ENTRY_POINTS.values(), ids=ENTRY_POINTS.keys())
def test_resolution_error_comes_before_an_earlier_arrays_check(call):
    import numpy as np

    import gradclip  # noqa: F401  (used by `call`)

    items = [np.ones(4), np.zeros(4, np.int64), _RaisingGrad()]
    with pytest.raises(RuntimeError, match="boom from .grad"):
        eval(call)


@pytest.mark.parametrize("bad_at", [0, 1, 17, 999])
@pytest.mark.parametrize("call", ENTRY_POINTS.values(), ids=ENTRY_POINTS.keys())
def test_first_failing_array_is_named(call, bad_at):
    import numpy as np

    import gradclip  # noqa: F401

    items = [np.full(8, 0.5, np.float32) for _ in range(1000)]
    items[bad_at] = np.zeros(8, np.int64)
    later = np.full(8, 0.5)
    later.flags.writeable = False
    items[min(bad_at + 3, 999) if bad_at < 999 else 998] = later
    before = [a.copy() for a in items]
    with pytest.raises((TypeError, ValueError)) as info:
        eval(call)
    first = min(bad_at, min(bad_at + 3, 999) if bad_at < 999 else 998)
    assert f"[{first}]" in str(info.value)
    assert all(np.array_equal(a, b) for a, b in zip(items, before)), "modified although refused"


@pytest.mark.parametrize("call", ENTRY_POINTS.values(), ids=ENTRY_POINTS.keys())
def test_described_as_walked_matches_described_after(call):
    # The same arrays, once as a list of exact ndarrays and once behind a .grad at the end
    # (which makes the call describe them after resolving): identical results.
    import numpy as np

    import gradclip

    rng = np.random.default_rng(3)
    base = [rng.standard_normal(s).astype(np.float32) for s in [(7,), (3, 5), (), (0,), (64,)] * 40]
    base += [rng.standard_normal((6, 4))[:, ::2], np.asfortranarray(rng.standard_normal((5, 3)))]
    a = [x.copy() for x in base]
    b = [x.copy() for x in base]
    holder = gradclip.Parameter(np.zeros(3, np.float32))
    holder.grad = np.full(3, 0.25, np.float32)
    items = a + [holder.grad.copy()]
    out_a = eval(call)
    items = b + [holder]
    out_b = eval(call)
    assert (out_a is None) == (out_b is None)
    if out_a is not None:
        assert np.asarray(out_a).tobytes() == np.asarray(out_b).tobytes()
    assert all(x.tobytes() == y.tobytes() for x, y in zip(a, b))
