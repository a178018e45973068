"""The torch-parity tests every elementwise optimizer gets, parametrised by one table.

A test module calls :func:`parity_tests` with the optimizer's name and its measured bounds and
binds the returned test functions at module level (pytest collects them there). The numbers
come from tests/optim_parity.py; see there for what is compared.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from optim_parity import (
    TORCH_HAS_FMA,
    VECTOR_LAYOUTS,
    check_clip_and_step,
    run_parity,
    split_tensor_lr,
    torch_optim_inputs,
)

REAL = [np.float32, np.float64]
COMPLEX = [np.complex64, np.complex128]
needs_fma = pytest.mark.skipif(not TORCH_HAS_FMA, reason="torch's CPU kernels use FMA only on AVX2/AVX512")


LARGE_LAYOUTS = [((650_003,), lambda x: x), ((1003, 1031), lambda x: x[::2, 1:])]


def _mode(dtype: Any) -> str:
    # gradclip.Parameter holds real arrays only: complex parameters are plain ndarrays.
    return "ndarray" if np.dtype(dtype).kind == "c" else "parameter"


def parity_tests(name: str, bounds: dict, complex_ok: bool = True) -> dict:
    """Test functions for optimizer ``name`` over torch's own configurations.

    ``bounds[dtype name]``: per-key ulp bounds of one step against real torch (gradclip's
    arrays reset to torch's after every step). float16 is bit-identical in every layout.
    """
    configs = torch_optim_inputs(name)
    ids = [desc for desc, _ in configs]
    dtypes = REAL + (COMPLEX if complex_ok else [])

    @needs_fma
    @pytest.mark.parametrize("dtype", dtypes, ids=lambda d: np.dtype(d).name)
    @pytest.mark.parametrize("kwargs", [kw for _, kw in configs], ids=ids)
    def test_bitwise_with_a_correctly_rounded_sqrt(kwargs, dtype):
        # torch's own code with only its sqrt made correctly rounded: every other operation
        # must give the same bits, in every layout, over the whole run (state_dict reload too).
        kw, tkw = split_tensor_lr(kwargs)
        run_parity(name, kw, dtype, ulps=0, exact_sqrt=True, mode=_mode(dtype), torch_kwargs=tkw)

    @pytest.mark.parametrize("dtype", dtypes, ids=lambda d: np.dtype(d).name)
    @pytest.mark.parametrize("kwargs", [kw for _, kw in configs], ids=ids)
    def test_matches_torch_within_the_measured_bound_per_step(kwargs, dtype):
        kw, tkw = split_tensor_lr(kwargs)
        run_parity(name, kw, dtype, ulps=bounds[np.dtype(dtype).name], resync=True, mode=_mode(dtype),
                   torch_kwargs=tkw)

    @pytest.mark.parametrize("mode", ["parameter", "ndarray"])
    @pytest.mark.parametrize("kwargs", [kw for _, kw in configs], ids=ids)
    def test_whole_run_stays_close_to_torch(kwargs, mode):
        # Without resetting: the differences of single steps do not grow into a divergence.
        kw, tkw = split_tensor_lr(kwargs)
        worst = run_parity(name, kw, np.float64, ulps=10**9, mode=mode, torch_kwargs=tkw)
        assert max(worst.values()) <= bounds["whole_run_float64"], worst

    @needs_fma
    @pytest.mark.parametrize("kwargs", [kw for _, kw in configs], ids=ids)
    def test_float16_matches_torch_bitwise_on_its_vectorised_path(kwargs):
        kw, tkw = split_tensor_lr(kwargs)
        run_parity(name, kw, np.float16, ulps=0, layouts=VECTOR_LAYOUTS, torch_kwargs=tkw)

    @pytest.mark.parametrize("kwargs", [kw for _, kw in configs], ids=ids)
    def test_float16_in_layouts_torch_runs_through_its_scalar_loop(kwargs):
        # Parameters of 4 to 12 elements, strided and transposed ones (DEFAULT_LAYOUTS): torch
        # computes every operation in its scalar loops, whose add(alpha) rounds the product to
        # float16 first. Bit for bit over the whole run (tests/test_optim_float16_torch.py
        # covers odd sizes, tails and layouts per option).
        kw, tkw = split_tensor_lr(kwargs)
        run_parity(name, kw, np.float16, ulps=0, torch_kwargs=tkw)

    @pytest.mark.parametrize("write_back", [True, False])
    @pytest.mark.parametrize("dtype", [np.float16] + dtypes, ids=lambda d: np.dtype(d).name)
    @pytest.mark.parametrize("kwargs", [kw for _, kw in configs], ids=ids)
    def test_clip_and_step_is_clip_grad_norm_then_step_bit_for_bit(kwargs, dtype, write_back):
        kw, _ = split_tensor_lr(kwargs)
        check_clip_and_step(name, kw, dtype, write_back=write_back, max_norm=0.5)

    @needs_fma
    @pytest.mark.parametrize("dtype", REAL, ids=lambda d: np.dtype(d).name)
    def test_large_arrays_bitwise_with_a_correctly_rounded_sqrt(dtype):
        # An odd-sized contiguous array (vector loop + remainder) and a strided view, together
        # over the threading threshold (2**20 elements): several threads, blocks, remainders.
        kw, tkw = split_tensor_lr(configs[-1][1])
        run_parity(name, kw, dtype, ulps=0, exact_sqrt=True, steps=3, save_at=2, layouts=LARGE_LAYOUTS,
                   torch_kwargs=tkw)

    return {f.__name__: f for f in (
        test_large_arrays_bitwise_with_a_correctly_rounded_sqrt,
        test_bitwise_with_a_correctly_rounded_sqrt,
        test_matches_torch_within_the_measured_bound_per_step,
        test_whole_run_stays_close_to_torch,
        test_float16_matches_torch_bitwise_on_its_vectorised_path,
        test_float16_in_layouts_torch_runs_through_its_scalar_loop,
        test_clip_and_step_is_clip_grad_norm_then_step_bit_for_bit,
    )}
