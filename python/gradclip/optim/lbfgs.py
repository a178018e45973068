"""L-BFGS, mirroring ``torch.optim.LBFGS``."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Optional, TypeAlias, Union

import numpy as np

from .. import _C, _clip
from .._parameter import Parameter
from .optimizer import Optimizer, ParamsT, _check_lr, _lr_scalar, _typename, _value

__all__ = ["LBFGS"]

#: A scalar of the line search: a Python number or a scalar of the parameters' dtype (where
#: torch has a 0-d tensor).
_Scalar: TypeAlias = Union[float, np.floating]
#: The line search's ``obj_func(x, t, d)``: the loss and the flat gradient at ``x + t d``.
_ObjFunc: TypeAlias = Callable[[np.ndarray, _Scalar, np.ndarray], tuple[float, np.ndarray]]


def _real_dtype(dtype: np.dtype) -> np.dtype:
    """complex64 -> float32, complex128 -> float64, real dtypes unchanged."""
    return np.finfo(dtype).dtype if dtype.kind == "c" else dtype


# torch's LBFGS works on 0-d tensors of the parameters' dtype and on Python floats. NumPy
# scalars of that dtype behave the same (NumPy 2 converts a Python float to the scalar's dtype
# before an operation, as torch converts it to the tensor's), with one exception, spelled out
# here: torch computes ``number / tensor`` as ``tensor.reciprocal() * number``.
def _div(num: _Scalar, den: _Scalar) -> _Scalar:
    if isinstance(den, (np.generic, np.ndarray)) and not isinstance(num, (np.generic, np.ndarray)):
        quotient: _Scalar = np.reciprocal(den) * num
        return quotient
    return num / den


def _sqrt(x: _Scalar) -> _Scalar:
    if isinstance(x, (np.generic, np.ndarray)):
        root: _Scalar = np.sqrt(x)
        return root
    return math.sqrt(x)


def _abs(x: _Scalar) -> _Scalar:
    # abs(x), with a type: mypy solves abs() for a float or a NumPy scalar, not for a union.
    return abs(x) if isinstance(x, float) else abs(x)


def _cubic_interpolate(
    x1: _Scalar,
    f1: _Scalar,
    g1: _Scalar,
    x2: _Scalar,
    f2: _Scalar,
    g2: _Scalar,
    bounds: Optional[tuple[_Scalar, _Scalar]] = None,
) -> _Scalar:
    # torch.optim.lbfgs._cubic_interpolate, operation for operation.
    if bounds is not None:
        xmin_bound, xmax_bound = bounds
    else:
        xmin_bound, xmax_bound = (x1, x2) if x1 <= x2 else (x2, x1)
    d1 = g1 + g2 - _div(3 * (f1 - f2), x1 - x2)
    d2_square = d1**2 - g1 * g2
    if d2_square >= 0:
        d2 = _sqrt(d2_square)
        min_pos: _Scalar
        if x1 <= x2:
            min_pos = x2 - (x2 - x1) * _div(g2 + d2 - d1, g2 - g1 + 2 * d2)
        else:
            min_pos = x1 - (x1 - x2) * _div(g1 + d2 - d1, g1 - g2 + 2 * d2)
        return min(max(min_pos, xmin_bound), xmax_bound)
    return (xmin_bound + xmax_bound) / 2.0


def _strong_wolfe(
    obj_func: _ObjFunc,
    dot: Callable[[np.ndarray, np.ndarray], np.floating],
    x: np.ndarray,
    t: _Scalar,
    d: np.ndarray,
    f: float,
    g: np.ndarray,
    gtd: np.floating,
    c1: float = 1e-4,
    c2: float = 0.9,
    tolerance_change: float = 1e-9,
    max_ls: int = 25,
) -> tuple[float, np.ndarray, _Scalar, int]:
    # torch.optim.lbfgs._strong_wolfe, step for step (flat vectors are 1-D ndarrays).
    d_norm = np.max(np.abs(d))
    g = g.copy()
    f_new, g_new = obj_func(x, t, d)
    ls_func_evals = 1
    gtd_new = dot(g_new, d)

    t_prev: _Scalar = 0
    f_prev, g_prev, gtd_prev = f, g, gtd
    done = False
    ls_iter = 0
    bracket: list[_Scalar]
    bracket_f: list[float]
    bracket_g: list[np.ndarray]
    # Left unset by torch where the zoom loop below does not run (done, or no evaluation left).
    bracket_gtd: list[np.floating] = []
    while ls_iter < max_ls:
        if f_new > (f + c1 * t * gtd) or (ls_iter > 1 and f_new >= f_prev):
            bracket = [t_prev, t]
            bracket_f = [f_prev, f_new]
            bracket_g = [g_prev, g_new.copy()]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        if abs(gtd_new) <= -c2 * gtd:
            bracket = [t]
            bracket_f = [f_new]
            bracket_g = [g_new]
            done = True
            break
        if gtd_new >= 0:
            bracket = [t_prev, t]
            bracket_f = [f_prev, f_new]
            bracket_g = [g_prev, g_new.copy()]
            bracket_gtd = [gtd_prev, gtd_new]
            break
        min_step = t + 0.01 * (t - t_prev)
        max_step = t * 10
        tmp = t
        t = _cubic_interpolate(t_prev, f_prev, gtd_prev, t, f_new, gtd_new, bounds=(min_step, max_step))
        t_prev = tmp
        f_prev = f_new
        g_prev = g_new.copy()
        gtd_prev = gtd_new
        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = dot(g_new, d)
        ls_iter += 1
    else:
        # torch's `if ls_iter == max_ls:` after the loop, which no break reaches.
        if ls_iter != max_ls:
            # max_ls < 0: torch never binds the bracket, and fails reading it.
            raise UnboundLocalError(
                "cannot access local variable 'bracket_f' where it is not associated with a value"
            )
        bracket = [0, t]
        bracket_f = [f, f_new]
        bracket_g = [g, g_new]

    insuf_progress = False
    low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[-1] else (1, 0)
    while not done and ls_iter < max_ls:
        if abs(bracket[1] - bracket[0]) * d_norm < tolerance_change:
            break
        t = _cubic_interpolate(bracket[0], bracket_f[0], bracket_gtd[0], bracket[1], bracket_f[1], bracket_gtd[1])
        eps = 0.1 * (max(bracket) - min(bracket))
        if min(max(bracket) - t, t - min(bracket)) < eps:
            if insuf_progress or t >= max(bracket) or t <= min(bracket):
                if _abs(t - max(bracket)) < _abs(t - min(bracket)):
                    t = max(bracket) - eps
                else:
                    t = min(bracket) + eps
                insuf_progress = False
            else:
                insuf_progress = True
        else:
            insuf_progress = False

        f_new, g_new = obj_func(x, t, d)
        ls_func_evals += 1
        gtd_new = dot(g_new, d)
        ls_iter += 1

        if f_new > (f + c1 * t * gtd) or f_new >= bracket_f[low_pos]:
            bracket[high_pos] = t
            bracket_f[high_pos] = f_new
            bracket_g[high_pos] = g_new.copy()
            bracket_gtd[high_pos] = gtd_new
            low_pos, high_pos = (0, 1) if bracket_f[0] <= bracket_f[1] else (1, 0)
        else:
            if abs(gtd_new) <= -c2 * gtd:
                done = True
            elif gtd_new * (bracket[high_pos] - bracket[low_pos]) >= 0:
                bracket[high_pos] = bracket[low_pos]
                bracket_f[high_pos] = bracket_f[low_pos]
                bracket_g[high_pos] = bracket_g[low_pos]
                bracket_gtd[high_pos] = bracket_gtd[low_pos]
            bracket[low_pos] = t
            bracket_f[low_pos] = f_new
            bracket_g[low_pos] = g_new.copy()
            bracket_gtd[low_pos] = gtd_new

    t = bracket[low_pos]
    f_new = bracket_f[low_pos]
    g_new = bracket_g[low_pos]
    return f_new, g_new, t, ls_func_evals


class LBFGS(Optimizer):
    r"""L-BFGS, as ``torch.optim.LBFGS``: a closure-based quasi-Newton method.

    Parameters
    ----------
    params : iterable
        :class:`gradclip.Parameter` objects (the closure sets their ``.grad``), all of one
        real dtype (float16, float32 or float64; a complex64/complex128 parameter counts as
        its real and imaginary parts, float32/float64). One parameter group only, as in torch.
    lr : float or Tensor, default 1
        Learning rate (the initial step length of every iteration).
        A 1-element torch tensor or ndarray (float32 or float64) is torch's Tensor lr,
        computed with as torch does (see :class:`~gradclip.optim.Optimizer`).
    max_iter : int, default 20
        Maximal number of iterations per :meth:`step`.
    max_eval : int, optional
        Maximal number of function evaluations per :meth:`step` (default
        ``max_iter * 5 // 4``).
    tolerance_grad : float, default 1e-7
        Stop when the largest gradient magnitude is at most this.
    tolerance_change : float, default 1e-9
        Stop when the loss or the step changes less than this.
    history_size : int, default 100
        Number of curvature pairs kept.
    line_search_fn : {None, 'strong_wolfe'}, default None
        Fixed steps of ``lr``, or a line search satisfying the strong Wolfe conditions.

    Raises
    ------
    ValueError
        A negative ``lr``; more than one parameter group (torch's messages).
    TypeError
        Parameters of different (real) dtypes, or plain ndarrays (no ``.grad`` for the closure
        to set).

    Notes
    -----
    As torch, every parameter is part of one flat vector: the state (kept, as torch keeps it,
    under the first parameter) holds flat 1-D ndarrays ``d``, ``prev_flat_grad``, and lists
    ``old_dirs``, ``old_stps`` of them; ``t``, ``H_diag`` and the ``ro``/``al`` entries are
    scalars of the parameters' dtype (torch's 0-d tensors) or Python numbers where torch has
    them; ``prev_loss`` a float; ``n_iter`` and ``func_evals`` ints. A state dict saved by
    torch loads here and continues.

    The vector algebra runs in C over the whole parameter list (``gradclip._C.list_dot``,
    ``list_axpy``, ``list_copy``): copying the gradients into the flat vector, moving the
    parameters along a direction (torch's ``add_(alpha=)``, an fma, bit for bit) and the dot
    products of the two-loop recursion. torch's dot products are MKL's, in the dtype and in
    an order of its own; gradclip's are accumulated in float64 (float16/float32, where the
    products are exact) or with a compensated sum (float64) and rounded once, so they are at
    least as accurate and reproducible on every machine, but not bit-identical to torch's.
    Parameters and losses therefore agree with torch to a measured tolerance (see the README),
    not bit for bit.

    Complex parameters are their real and imaginary parts, as torch's ``view_as_real``
    gives them: each is 2 * size entries of the flat vectors (real, imaginary, element by
    element), and the step moves both parts as real numbers. complex64 parameters mix with
    float32 ones (one float32 vector), complex128 with float64.

    Unlike torch, which promotes mixed dtypes when it concatenates, gradclip needs one real
    dtype.
    """

    _supports_complex = True

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1,
        max_iter: int = 20,
        max_eval: Optional[int] = None,
        tolerance_grad: float = 1e-7,
        tolerance_change: float = 1e-9,
        history_size: int = 100,
        line_search_fn: Optional[str] = None,
    ) -> None:
        _check_lr(lr)
        if not 0.0 <= lr:
            raise ValueError(f"Invalid learning rate: {lr}")
        if max_eval is None:
            max_eval = max_iter * 5 // 4
        defaults = {
            "lr": lr,
            "max_iter": max_iter,
            "max_eval": max_eval,
            "tolerance_grad": tolerance_grad,
            "tolerance_change": tolerance_change,
            "history_size": history_size,
            "line_search_fn": line_search_fn,
        }
        super().__init__(params, defaults)
        if len(self.param_groups) != 1:
            raise ValueError("LBFGS doesn't support per-parameter options (parameter groups)")
        self._params = self.param_groups[0]["params"]
        for p in self._params:
            if not isinstance(p, Parameter):
                raise TypeError(
                    "LBFGS reads the gradients its closure computes from each parameter's .grad, "
                    f"so its parameters must be gradclip.Parameter objects, not {_typename(p)}"
                )
        dtypes = {_value(p).dtype for p in self._params}
        if len({_real_dtype(dt) for dt in dtypes}) > 1:
            raise TypeError(
                "LBFGS treats all parameters as one vector, so they must share one dtype "
                "(complex64 counts as float32, complex128 as float64), got "
                + ", ".join(sorted(str(dt) for dt in dtypes))
            )
        self._numel_cache: Optional[int] = None

    def add_param_group(self, param_group: dict[str, Any]) -> None:  # noqa: D102 - torch's
        super().add_param_group(param_group)

    # -- the flat vector ------------------------------------------------------------------

    def _dtype(self) -> np.dtype:
        # The flat vectors' dtype: a complex parameter's real parts'.
        return _real_dtype(_value(self._params[0]).dtype)

    def _numel(self) -> int:
        if self._numel_cache is None:
            # torch: 2 * numel for a complex parameter (its view_as_real).
            self._numel_cache = sum(
                2 * _value(p).size if _value(p).dtype.kind == "c" else _value(p).size for p in self._params
            )
        return self._numel_cache

    def _dot(self, x: np.ndarray, y: np.ndarray) -> np.floating:
        value: np.floating = self._dtype().type(_C.list_dot(x, y))
        return value

    def _abs_sum(self, x: np.ndarray) -> np.floating:
        # torch's x.abs().sum(), accumulated in float64 and rounded once.
        value: np.floating = self._dtype().type(_C.total_norm(x, 1.0, False))
        return value

    def _gather_flat_grad(self) -> np.ndarray:
        flat = np.empty(self._numel(), dtype=self._dtype())
        _C.list_copy(flat, self._params)  # .grad of each, zeros where None
        return flat

    def _add_grad(self, step_size: Any, update: np.ndarray) -> None:
        _C.list_axpy([_value(p) for p in self._params], step_size, update)

    def _clone_param(self) -> np.ndarray:
        flat = np.empty(self._numel(), dtype=self._dtype())
        _C.list_copy(flat, [_value(p) for p in self._params])
        return flat

    def _set_param(self, params_data: np.ndarray) -> None:
        _C.list_copy([_value(p) for p in self._params], params_data)

    def _directional_evaluate(
        self, closure: Callable[[], Any], x: np.ndarray, t: _Scalar, d: np.ndarray
    ) -> tuple[float, np.ndarray]:
        self._add_grad(t, d)
        loss = float(closure())
        flat_grad = self._gather_flat_grad()
        self._set_param(x)
        return loss, flat_grad

    # -- stepping ---------------------------------------------------------------------------

    def step(self, closure: Callable[[], Any]) -> Any:  # type: ignore[override]  # closure required, as torch's
        """Perform one optimization step (up to ``max_iter`` iterations).

        Parameters
        ----------
        closure : callable
            Re-evaluates the model: sets every parameter's ``.grad`` and returns the loss
            (anything ``float()`` accepts). Called several times per step.

        Returns
        -------
        object
            What the first call of ``closure`` returned.
        """
        if len(self.param_groups) != 1:
            raise AssertionError(f"Expected exactly one param_group, but got {len(self.param_groups)}")
        group = self.param_groups[0]
        lr = _lr_scalar(group["lr"])  # a float32 Tensor lr: float32 arithmetic, as torch's
        max_iter = group["max_iter"]
        max_eval = group["max_eval"]
        tolerance_grad = group["tolerance_grad"]
        tolerance_change = group["tolerance_change"]
        line_search_fn = group["line_search_fn"]
        history_size = group["history_size"]
        dot = self._dot

        # Global state, registered under the first parameter as torch does.
        state = self.state[self._params[0]]
        state.setdefault("func_evals", 0)
        state.setdefault("n_iter", 0)

        orig_loss = closure()
        loss = float(orig_loss)
        current_evals = 1
        state["func_evals"] += 1

        flat_grad = self._gather_flat_grad()
        opt_cond = np.max(np.abs(flat_grad)) <= tolerance_grad
        if opt_cond:
            return orig_loss

        # The previous step's entries: None before the first step, which sets them all, and
        # then whatever the state holds (this optimizer's, or a loaded one, torch's included).
        d: Any = state.get("d")
        t: Any = state.get("t")
        old_dirs: Any = state.get("old_dirs")
        old_stps: Any = state.get("old_stps")
        ro: Any = state.get("ro")
        H_diag: Any = state.get("H_diag")
        prev_flat_grad: Any = state.get("prev_flat_grad")
        prev_loss: Optional[float] = state.get("prev_loss")

        n_iter = 0
        while n_iter < max_iter:
            n_iter += 1
            state["n_iter"] += 1

            # -- direction --
            if state["n_iter"] == 1:
                d = -flat_grad
                old_dirs = []
                old_stps = []
                ro = []
                H_diag = 1
            else:
                y = flat_grad - prev_flat_grad
                s = d * d.dtype.type(t)  # torch: t in d's dtype (t may be a float64 0-d tensor)
                ys = dot(y, s)
                if ys > 1e-10:
                    if len(old_dirs) == history_size:
                        old_dirs.pop(0)
                        old_stps.pop(0)
                        ro.pop(0)
                    old_dirs.append(y)
                    old_stps.append(s)
                    ro.append(_div(1.0, ys))
                    H_diag = ys / dot(y, y)

                num_old = len(old_dirs)
                if "al" not in state:
                    state["al"] = [None] * history_size
                al = state["al"]

                # The two-loop recursion, on one buffer.
                q = -flat_grad
                for i in range(num_old - 1, -1, -1):
                    al[i] = dot(old_stps[i], q) * ro[i]
                    _C.list_axpy(q, -al[i], old_dirs[i])
                d = r = q * H_diag
                for i in range(num_old):
                    be_i = dot(old_dirs[i], r) * ro[i]
                    _C.list_axpy(r, al[i] - be_i, old_stps[i])

            if prev_flat_grad is None:
                prev_flat_grad = flat_grad.copy()
            else:
                prev_flat_grad[...] = flat_grad
            prev_loss = loss

            # -- step length --
            if state["n_iter"] == 1:
                t = min(1.0, _div(1.0, self._abs_sum(flat_grad))) * lr
            else:
                t = lr

            gtd = dot(flat_grad, d)
            if gtd > -tolerance_change:
                break

            ls_func_evals = 0
            if line_search_fn is not None:
                if line_search_fn != "strong_wolfe":
                    raise RuntimeError("only 'strong_wolfe' is supported")
                x_init = self._clone_param()

                def obj_func(x: np.ndarray, t: _Scalar, d: np.ndarray) -> tuple[float, np.ndarray]:
                    return self._directional_evaluate(closure, x, t, d)

                loss, flat_grad, t, ls_func_evals = _strong_wolfe(
                    obj_func, dot, x_init, t, d, loss, flat_grad, gtd, max_ls=max_eval - current_evals
                )
                self._add_grad(t, d)
                opt_cond = np.max(np.abs(flat_grad)) <= tolerance_grad
            else:
                self._add_grad(t, d)
                if n_iter != max_iter:
                    # Re-evaluated except in the last iteration, as torch.
                    loss = float(closure())
                    flat_grad = self._gather_flat_grad()
                    opt_cond = np.max(np.abs(flat_grad)) <= tolerance_grad
                    ls_func_evals = 1

            current_evals += ls_func_evals
            state["func_evals"] += ls_func_evals

            # -- stopping --
            if n_iter == max_iter:
                break
            if current_evals >= max_eval:
                break
            if opt_cond:
                break
            if np.max(np.abs(d * d.dtype.type(t))) <= tolerance_change:
                break
            if abs(loss - prev_loss) < tolerance_change:
                break

        state["d"] = d
        state["t"] = t
        state["old_dirs"] = old_dirs
        state["old_stps"] = old_stps
        state["ro"] = ro
        state["H_diag"] = H_diag
        state["prev_flat_grad"] = prev_flat_grad
        state["prev_loss"] = prev_loss
        return orig_loss

    def clip_and_step(  # type: ignore[override]  # closure= instead of grads=: LBFGS re-evaluates
        self,
        max_norm: float,
        norm_type: Union[float, str] = 2.0,
        *,
        closure: Callable[[], Any],
        error_if_nonfinite: bool = False,
    ) -> Any:
        """Take a step with the gradient of every closure evaluation clipped.

        LBFGS evaluates its closure several times per step, and each evaluation replaces the
        gradients, so clipping once before :meth:`step` would be undone at once. Here every
        evaluation is followed by ``clip_grad_norm_(params, max_norm, norm_type,
        error_if_nonfinite)``: exactly ``step(clipped_closure)``. Not fused (LBFGS is not
        elementwise): clip, then step.

        Parameters
        ----------
        max_norm : float
            The largest allowed total norm.
        norm_type : float or {'inf', '-inf'}, default 2.0
            The order of the norm.
        closure : callable
            As in :meth:`step`.
        error_if_nonfinite : bool, default False
            Raise ``RuntimeError`` if a total norm is NaN or infinite.

        Returns
        -------
        object
            What the first call of ``closure`` returned (as :meth:`step`).
        """
        params = self._params

        def clipped() -> Any:
            loss = closure()
            _clip.clip_grad_norm_(params, max_norm, norm_type, error_if_nonfinite)
            return loss

        return self.step(clipped)
