"""The AVX-512 loops, the AVX2+FMA loops and the portable loops must give bit-identical results.

The instruction set is chosen once per process, so each is run in a subprocess
(GRADCLIP_ISA=baseline forces the portable loops) and the results' bytes are compared.
"""

import os
import subprocess
import sys
import textwrap

import pytest

import gradclip

SCRIPT = textwrap.dedent(
    """
    import hashlib, sys
    import numpy as np
    import gradclip
    from gradclip import _C

    digest = hashlib.sha256()
    rng = np.random.default_rng(0)
    for dtype in (np.float16, np.float32, np.float64, np.complex64, np.complex128):
        base = rng.standard_normal((301, 257)) * 10
        if np.dtype(dtype).kind == "c":
            base = base + 1j * rng.standard_normal(base.shape)
        for view in (lambda a: a, lambda a: a[::-1, 1::3], lambda a: a.T):
            for p in (2.0, 1.0, 0.0, float("inf"), -float("inf"), 3.0, -1.0, 0.1):
                digest.update(np.float64(gradclip.get_total_norm(view(base.astype(dtype)), p)).tobytes())
            if dtype in (np.float64, np.complex128):  # powers that underflow: the rescaled pass
                for p in (2.0, 3.5):
                    tiny = view(base.astype(dtype) * 1e-160)
                    digest.update(np.float64(gradclip.get_total_norm([tiny, tiny[:1]], p)).tobytes())
            g = base.astype(dtype)
            digest.update(np.float64(gradclip.clip_grad_norm_(view(g), 3.0)).tobytes())
            digest.update(g.tobytes())
            if np.dtype(dtype).kind == "f":
                g = base.astype(dtype)
                gradclip.clip_grad_value_(view(g), 7.5)
                digest.update(g.tobytes())
    for n in (1, 31, 32, 33, 95, 1000, 65537, 300001):
        h = (rng.standard_normal(n) * 100).astype(np.float16)
        digest.update(np.float64(gradclip.get_total_norm(h)).tobytes())
        digest.update(np.float64(gradclip.get_total_norm([h[1:], h[::2]])).tobytes())
    # Each array's sum of squares before the root, in float64: where a float32 or float16
    # total's final rounding would hide a difference in the lanes' order.
    for dtype in (np.float16, np.float32, np.float64):
        # Every length up to 300 gives every tail after every number of whole groups; lanes
        # of different magnitudes (a scale per lane) make a swap of lanes show in the sum.
        for n in list(range(1, 301)) + [1000, 65537, 300001]:
            lane_scale = 2.0 ** (np.arange(n) % 16 - 8)
            x = (rng.standard_normal(n) * 100 * lane_scale).astype(dtype)
            digest.update(_C.array_norms([x, x[1:], x[::2]], 2.0, True)[0].tobytes())
    halves = np.arange(2**16, dtype=np.uint16).view(np.float16)
    for clip_value in (0.0, 6e-8, 1.5, 65504.0, float("inf")):
        for step in (1, 3):
            g = halves.copy()
            gradclip.clip_grad_value_(g[::step], clip_value)
            digest.update(g.tobytes())
    for dtype in (np.float16, np.float32, np.float64):
        params = [rng.standard_normal((65, 33)).astype(dtype), rng.standard_normal(130).astype(dtype)[::2]]
        bufs = [None, None]
        m = [np.zeros_like(p) for p in params]; v = [np.zeros_like(p) for p in params]
        mx = [np.zeros_like(p) for p in params]; steps = [np.zeros((), np.float32) for p in params]
        adam_params = [p.copy() for p in params]
        for step in range(4):
            grads = [rng.standard_normal(p.shape).astype(dtype) for p in params]
            _C.sgd_step([(params, [g.copy() for g in grads], bufs, 0.1, 0.9, 0.1, 1e-2, False, True)], 0.7, True)
            _C.adam_step([(adam_params, grads, m, v, mx, steps, True, 0.9, 0.999, 1e-3, 1e-2, 1e-8, False, True)], None, True)
            _C.average_step([(m, grads, False, 0.3), (v, grads, False, 0.9), (mx, grads, True, step + 2)], None, False)
        for a in params + bufs + adam_params + m + v + mx:
            digest.update(np.ascontiguousarray(a).tobytes())
    # Beyond torch (issue 14): AGC, per-example clipping, the zero policy with groups.
    for dtype in (np.float16, np.float32, np.float64):
        values = [rng.standard_normal((65, 33)).astype(dtype), rng.standard_normal((8, 3, 3, 3)).astype(dtype).T]
        grads = [rng.standard_normal(v.shape).astype(dtype) for v in values]
        gradclip.adaptive_clip_grad_(values, 0.05, grads=grads)
        pe = [rng.standard_normal((33, 40, 7)).astype(dtype)[:, ::2], rng.standard_normal((33, 5)).astype(dtype)]
        sums, norms = gradclip.clip_per_example_and_sum(pe, 1.0)
        g = [rng.standard_normal((301, 7)).astype(dtype), np.array([np.inf, 1.0], dtype), rng.standard_normal(9).astype(dtype)]
        info = _C.clip_info(g, True, 2.0, (1.0, 0.5), (2, 1), 3, 1)
        for a in grads + sums + [norms] + g + [info[0]]:
            digest.update(np.ascontiguousarray(a).tobytes())
    from gradclip import optim
    for name, kw in [("Adagrad", dict(lr_decay=0.1, weight_decay=0.1)), ("RMSprop", dict(centered=True, momentum=0.5)),
                     ("RMSprop", dict(weight_decay=0.1)), ("Adadelta", dict(weight_decay=0.1)), ("Adamax", dict(weight_decay=0.1))]:
        for dtype in (np.float16, np.float32, np.float64, np.complex64, np.complex128):
            params = [rng.standard_normal((65, 33)).astype(dtype), rng.standard_normal(130).astype(dtype)[::2]]
            opt = getattr(optim, name)(params, **kw)
            for step in range(3):
                grads = [rng.standard_normal(p.shape).astype(dtype) for p in params]
                opt.clip_and_step(5.0, grads=grads) if step == 1 else opt.step(grads=grads)
            for p in params:
                digest.update(np.ascontiguousarray(p).tobytes())
                for value in opt.state[p].values():
                    digest.update(np.ascontiguousarray(value).tobytes())
    configs = [("SGD", dict(lr=0.1, momentum=0.9, weight_decay=1e-2, nesterov=True)), ("Adam", dict(weight_decay=0.1)),
               ("NAdam", dict(weight_decay=0.1)), ("NAdam", dict(decoupled_weight_decay=True, weight_decay=0.1)),
               ("RAdam", dict(betas=(0.9, 0.9), maximize=True)), ("ASGD", dict(t0=1, weight_decay=0.1)),
               ("Rprop", dict(etas=(0.3, 1.7)))]
    for dtype in (np.float16, np.float32, np.float64, np.complex64, np.complex128):
        for name, kwargs in configs:
            def draw(shape):
                x = rng.standard_normal(shape)
                return (x + 1j * rng.standard_normal(shape) if np.dtype(dtype).kind == "c" else x).astype(dtype)
            params = [draw((65, 33)), draw(130)[::2], draw((40, 7)).T]
            opt = getattr(optim, name)(params, **kwargs)
            for step in range(4):
                grads = [draw(p.shape) for p in params]
                if step % 2:
                    opt.clip_and_step(1.0, grads=grads)
                else:
                    opt.step(grads=grads)
            for p in params:
                digest.update(np.ascontiguousarray(p).tobytes())
                for value in opt.state[p].values():
                    digest.update(np.ascontiguousarray(value).tobytes())
    print(_C.ISA, digest.hexdigest())
    """
)


def run(isa):
    env = dict(os.environ)
    env.pop("GRADCLIP_ISA", None)
    if isa:
        env["GRADCLIP_ISA"] = isa
    out = subprocess.run([sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True)
    return out.stdout.split()


def test_baseline_and_native_loops_agree_bit_for_bit():
    native_isa, native = run(None)
    baseline_isa, baseline = run("baseline")
    assert baseline_isa == "baseline"
    if native_isa == "baseline":
        pytest.skip("this CPU has no AVX2+FMA+F16C: only the portable loops exist here")
    assert native == baseline
    if native_isa == "avx512":  # every loop at 512 bits; then AVX2 with the float16 and float32 norms'
        mixed_isa, mixed = run("avx2+avx512")
        assert mixed_isa == "avx2+avx512" and mixed == baseline
    if native_isa in ("avx512", "avx2+avx512"):  # and without any AVX-512 loop
        avx2_isa, avx2 = run("avx2")
        assert avx2_isa == "avx2" and avx2 == baseline


def test_isa_is_reported():
    assert gradclip._C.ISA in ("avx512", "avx2+avx512", "avx2", "baseline")
