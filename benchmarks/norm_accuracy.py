"""How close gradclip's and torch's total norms are to the exactly rounded value.

For each input dtype and norm order p, a seeded random suite of gradient lists (1-6 arrays of
1-1000 elements, values spread over two decades around a magnitude that ranges from tiny to
huge for the dtype) is reduced by ``gradclip.get_total_norm`` and by
``torch.nn.utils.get_total_norm`` (default arguments). Each result is compared with the exact
total, the p-norm of the concatenated values (equal to torch's definition, the norm of the
per-array norms, for p > 0), computed with mpmath at 400 bits and rounded to nearest in the
result's own dtype (gradclip returns float32 for float16 input, torch float16). The error is
in units in the last place of that dtype at the exact value. Cases whose exact total is
outside the result dtype's finite range are counted apart ("overflow"); a finite exact value
returned as inf is counted as an overflow error of that implementation.

Run: ``python benchmarks/norm_accuracy.py [--trials N] [--markdown]``; the README table is
the ``--markdown`` output of the default run (seed 0).
"""

from __future__ import annotations

import argparse
import math
import sys

import mpmath
import numpy as np
import torch

import gradclip

MAGNITUDES = {
    np.float64: [1e-300, 1e-200, 1e-100, 1e-20, 1.0, 1e22, 1e100, 1e200, 1e300],
    np.float32: [1e-40, 1e-30, 1e-10, 1.0, 1e10, 1e30, 1e37],
    np.float16: [1e-6, 1e-3, 1.0, 30.0, 3000.0],
}
ORDERS = [1.0, 2.0, 3.5, 0.5, 0.1, float("inf")]


def make_case(rng: np.random.Generator, dtype: type, magnitude: float) -> list[np.ndarray]:
    arrays = []
    for _ in range(int(rng.integers(1, 7))):
        n = int(rng.choice([1, 2, 7, 64, 300, 1000]))
        spread = 10.0 ** rng.uniform(-1, 1, n)
        values = magnitude * spread * rng.choice([-1.0, 1.0], n)
        with np.errstate(over="ignore", under="ignore"):
            arrays.append(values.astype(dtype))
    return arrays


def exact_total(arrays: list[np.ndarray], p: float) -> mpmath.mpf:
    with mpmath.workprec(400):
        values = [mpmath.mpf(float(v)) for a in arrays for v in np.abs(a.astype(np.float64)).ravel()]
        if p == math.inf:
            return max(values)
        total = mpmath.fsum(v**p for v in values if v != 0)
        return total ** (1 / mpmath.mpf(p)) if total != 0 else mpmath.mpf(0)


def rounded(x: mpmath.mpf, dtype: type) -> float:
    """x rounded to nearest in dtype (inf if beyond its range)."""
    info = np.finfo(dtype)
    if x == 0:
        return 0.0
    if x > mpmath.mpf(float(info.max)) * (1 + mpmath.mpf(2) ** -(info.nmant + 1)):
        return math.inf
    with mpmath.workprec(400):
        e = int(mpmath.floor(mpmath.log(x, 2)))
        quantum = mpmath.mpf(2) ** (max(e, info.minexp) - info.nmant)
        q = x / quantum
        n = int(mpmath.floor(q))
        rest = q - n
        if rest > 0.5 or (rest == 0.5 and n % 2 == 1):
            n += 1
        return float(dtype(float(n * quantum)))


def ulp_error(result: float, exact: mpmath.mpf, dtype: type) -> float:
    """|result - exact| in ulps of dtype at the exactly rounded value."""
    ref = rounded(exact, dtype)
    if math.isinf(ref):
        return 0.0 if result == math.inf else math.inf
    if math.isinf(result) or math.isnan(result):
        return math.inf
    spacing = float(np.spacing(dtype(ref))) if ref != 0 else float(np.finfo(dtype).smallest_subnormal)
    with mpmath.workprec(400):
        return float(abs(mpmath.mpf(result) - exact) / mpmath.mpf(spacing))


def measure(trials: int, seed: int) -> list[dict]:
    rows = []
    for dtype, magnitudes in MAGNITUDES.items():
        torch_dtype = getattr(torch, np.dtype(dtype).name)
        for p in ORDERS:
            rng = np.random.default_rng([seed, int(np.dtype(dtype).itemsize), int(p * 10) if p != math.inf else 999])
            row = {"dtype": np.dtype(dtype).name, "p": p, "cases": 0, "exact_overflow": 0}
            for who in ("gradclip", "torch"):
                row[who] = []
                row[who + "_overflow"] = 0
            row["torch_no_underflow"] = []
            for t in range(trials):
                magnitude = magnitudes[t % len(magnitudes)]
                # Whether |x|^p of the smallest values underflows float64 (torch's float64 sum
                # then returns 0 or a few correct bits; float32 input: float32's range).
                floor = 1e-300 if dtype == np.float64 else 1e-37
                underflow = p != math.inf and p >= 1 and p * math.log10(0.1 * magnitude) < math.log10(floor)
                arrays = make_case(rng, dtype, magnitude)
                exact = exact_total(arrays, p)
                ours = gradclip.get_total_norm(arrays, p)
                theirs = torch.nn.utils.get_total_norm([torch.from_numpy(a) for a in arrays], p)
                row["cases"] += 1
                results = {"gradclip": (float(ours), ours.dtype.type), "torch": (theirs.item(), theirs.numpy().dtype.type)}
                if math.isinf(rounded(exact, np.float64)):
                    row["exact_overflow"] += 1
                for who, (value, out_dtype) in results.items():
                    err = ulp_error(value, exact, out_dtype)
                    if math.isinf(err):
                        row[who + "_overflow"] += 1
                    else:
                        row[who].append(err)
                        if who == "torch" and not underflow:
                            row["torch_no_underflow"].append(err)
            rows.append(row)
    return rows


def summarize(errors: list[float]) -> tuple[float, float]:
    if not errors:
        return math.nan, math.nan
    return max(errors), float(np.mean(errors))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--trials", type=int, default=90, help="lists per dtype and order")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--markdown", action="store_true")
    args = parser.parse_args(argv)
    rows = measure(args.trials, args.seed)
    header = (
        "| input dtype | p | lists | gradclip max / mean ulp | torch max / mean ulp | torch max, no underflow "
        "| inf where the exact value is finite (gradclip / torch) |"
    )
    print(header)
    print("| --- | --- | --- | --- | --- | --- | --- |")

    def fmt(x):
        return f"{x:.3g}" if x >= 1000 else f"{x:.2f}"

    for row in rows:
        g, t = summarize(row["gradclip"]), summarize(row["torch"])
        tn = summarize(row["torch_no_underflow"])[0]
        print(
            f"| {row['dtype']} | {row['p']:g} | {row['cases']} | {fmt(g[0])} / {fmt(g[1])} | {fmt(t[0])} / {fmt(t[1])} "
            f"| {fmt(tn)} | {row['gradclip_overflow']} / {row['torch_overflow']} |"
        )
    print(
        f"\ngradclip {gradclip.__version__ if hasattr(gradclip, '__version__') else ''} from {gradclip.__file__}; "
        f"torch {torch.__version__}; NumPy {np.__version__}; mpmath {mpmath.__version__}; seed {args.seed}",
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
