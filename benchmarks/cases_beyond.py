"""Benchmark cases for the features beyond torch (issue 14).

- `clip_grad_norm_ return_info`: ``clip_grad_norm_(..., return_info=True)`` against the plain
  call ("gradclip plain" column) on W1/W2: the per-array norms come out of the same reduction,
  so the overhead should be the cost of building one small record.
- `adaptive_clip_grad_ (AGC)`: gradclip's one-call AGC against timm's ``adaptive_clip_grad``
  run by torch ("torch reference") and the same formula as a NumPy loop, on the W4
  min-char-rnn parameters and on M1, a 1M-parameter MLP.
- `clip_per_example_and_sum`: B = 256 per-example gradients of W4 and of M1 (1 GiB as
  float32 in the full run: 256 x 1M), against Opacus' formula in torch and a NumPy loop.
"""

from __future__ import annotations

import numpy as np

try:
    import torch
except ImportError:  # the torch column then says so
    torch = None

import gradclip
from cases import Case, Traffic, _restorer, random_arrays, workload_shapes

NO_TORCH = "n/a (torch is not installed)"

#: M1: a 1,000,000-parameter MLP, 784 -> 1000 -> 200 -> 10 (weights and biases), ~1.0M.
M1 = [(1000, 784), (1000,), (200, 1000), (200,), (10, 200), (10,)]
M1_QUICK = [(100, 78), (100,), (20, 100), (20,), (10, 20), (10,)]


def _shapes(workload: str, quick: bool) -> list[tuple[int, ...]]:
    if workload == "M1":
        return M1_QUICK if quick else M1
    return workload_shapes(workload, quick)


def return_info_case(workload: str, dtype: str, quick: bool) -> Case:
    dt = np.dtype(dtype)
    pristine = random_arrays(_shapes(workload, quick), dt, seed=1)
    work = [a.copy() for a in pristine]
    total = float(gradclip.get_total_norm(pristine))
    n = sum(a.size for a in work)
    case = Case(workload, "clip_grad_norm_ return_info", dtype, len(work), n, impls={})
    case.setup = _restorer(work, pristine)
    case.impls["gradclip"] = lambda: gradclip.clip_grad_norm_(work, 0.5 * total, return_info=True)
    case.impls["gradclip plain"] = lambda: gradclip.clip_grad_norm_(work, 0.5 * total)
    nb = n * dt.itemsize
    case.traffic = Traffic(read=nb, rw=2 * nb, formula="read N, then read+write N (3N)")
    case.notes.append("return_info: target gradclip plain / gradclip >= 0.95 (no more than 5 % overhead)")
    return case


def np_agc(values: list[np.ndarray], grads: list[np.ndarray], clip_factor: float = 0.01, eps: float = 1e-3) -> None:
    """timm's AGC as people write it in NumPy: per array, unit-wise norms, where()."""
    for p, g in zip(values, grads):
        if p.ndim > 1:
            axes = tuple(range(1, p.ndim))
            pn = np.sqrt(np.sum(p * p, axis=axes, keepdims=True))
            gn = np.sqrt(np.sum(g * g, axis=axes, keepdims=True))
        else:
            pn, gn = np.linalg.norm(p), np.linalg.norm(g)
        mx = np.maximum(pn, eps) * clip_factor
        np.copyto(g, np.where(gn < mx, g, g * (mx / np.maximum(gn, 1e-6))))


def torch_agc(params: list, clip_factor: float = 0.01, eps: float = 1e-3) -> None:
    """timm.utils.agc.adaptive_clip_grad (norm_type 2), as in timm."""
    for p in params:
        p_data, g_data = p.detach(), p.grad.detach()
        dims = tuple(range(1, p.ndim))
        max_norm = (p_data.norm(2.0, dim=dims, keepdim=True) if p.ndim > 1 else p_data.norm(2.0)).clamp_(min=eps).mul_(clip_factor)
        grad_norm = g_data.norm(2.0, dim=dims, keepdim=True) if p.ndim > 1 else g_data.norm(2.0)
        clipped = g_data * (max_norm / grad_norm.clamp(min=1e-6))
        p.grad.detach().copy_(torch.where(grad_norm < max_norm, g_data, clipped))


def agc_case(workload: str, dtype: str, quick: bool) -> Case:
    dt = np.dtype(dtype)
    shapes = _shapes(workload, quick)
    values = random_arrays(shapes, dt, seed=2, scale=1.0)
    pristine = random_arrays(shapes, dt, seed=3)
    work = [g.copy() for g in pristine]
    tparams = []
    for v, g in zip(values, work):
        if torch is not None:
            tp = torch.nn.Parameter(torch.from_numpy(v))
            tp.grad = torch.from_numpy(g)
            tparams.append(tp)
    n = sum(a.size for a in work)
    case = Case(workload, "adaptive_clip_grad_ (AGC)", dtype, len(work), n, impls={})
    case.setup = _restorer(work, pristine)
    case.impls["gradclip"] = lambda: gradclip.adaptive_clip_grad_(values, grads=work)
    if torch is None:
        case.unavailable["torch reference"] = NO_TORCH
    else:
        case.impls["torch reference"] = lambda: torch_agc(tparams)
    case.impls["numpy"] = lambda: np_agc(values, work)
    nb = n * dt.itemsize
    case.traffic = Traffic(read=2 * nb, rw=2 * nb, formula="read p and g (2N), read+write g (2N, at most)")
    case.notes.append("AGC: clip_factor 0.01, eps 1e-3; gradients restored before every call")
    return case


def np_per_example(grads: list[np.ndarray], max_norm: float) -> list[np.ndarray]:
    b = grads[0].shape[0]
    norms = np.sqrt(sum(np.sum(g.reshape(b, -1) ** 2, axis=1) for g in grads))
    factor = np.minimum(max_norm / (norms + 1e-6), 1.0).astype(grads[0].dtype)
    return [np.tensordot(factor, g, axes=(0, 0)) for g in grads]


def torch_per_example(grad_samples: list, max_norm: float) -> list:
    """opacus DPOptimizer.clip_and_accumulate (flat clipping)."""
    per_param_norms = [g.reshape(len(g), -1).norm(2, dim=-1) for g in grad_samples]
    per_sample_norms = torch.stack(per_param_norms, dim=1).norm(2, dim=1)
    factor = (max_norm / (per_sample_norms + 1e-6)).clamp(max=1.0)
    return [torch.einsum("i,i...", factor, g) for g in grad_samples]


def per_example_case(workload: str, dtype: str, quick: bool) -> Case:
    dt = np.dtype(dtype)
    batch = 16 if quick else 256
    shapes = [(batch, *s) for s in _shapes(workload, quick)]
    grads = random_arrays(shapes, dt, seed=4)
    tgrads = [torch.from_numpy(g) for g in grads] if torch is not None else []
    n = sum(a.size for a in grads)
    case = Case(workload, f"clip_per_example_and_sum B={batch}", dtype, len(grads), n, impls={})
    max_norm = 0.1
    case.impls["gradclip"] = lambda: gradclip.clip_per_example_and_sum(grads, max_norm)
    if torch is None:
        case.unavailable["torch reference"] = NO_TORCH
    else:
        case.impls["torch reference"] = lambda: torch_per_example(tgrads, max_norm)
    case.impls["numpy"] = lambda: np_per_example(grads, max_norm)
    nb = n * dt.itemsize
    case.traffic = Traffic(read=2 * nb, rw=0, formula="read the batch twice (norms, weighted sum) (2N)")
    return case


def beyond_plan(quick: bool) -> list[tuple[str, str, str, object]]:
    plan = []
    for w in ("W1", "W2"):
        plan.append((w, "clip_grad_norm_ return_info", "float32", lambda w=w: return_info_case(w, "float32", quick)))
    for w, dtype in (("W4", "float64"), ("M1", "float32")):
        plan.append((w, "adaptive_clip_grad_ (AGC)", dtype, lambda w=w, d=dtype: agc_case(w, d, quick)))
        plan.append((w, "clip_per_example_and_sum", dtype, lambda w=w, d=dtype: per_example_case(w, d, quick)))
    return plan
