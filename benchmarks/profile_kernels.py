"""Why a case misses its target: kernel throughput, call overhead, profiles, instructions.

    python benchmarks/profile_kernels.py                 # every section
    python benchmarks/profile_kernels.py --sections throughput,overhead

Sections
--------
throughput  GB/s of gradclip's norm / scale / clamp per dtype, on one thread and on the default
            thread count, for an array in L2 (the compute ceiling) and one in DRAM, next to
            the bandwidth probes. A kernel whose L2 rate is close to its DRAM rate is
            compute-bound; one far below the probe in DRAM is leaving bandwidth unused.
overhead    Fixed cost per call and cost per array (slope over lists of 1-element arrays)
            of gradclip, torch and NumPy: what decides W3 (1000 arrays) and W4 (5 small ones).
perf        `perf record -e cpu-clock` of W3 get_total_norm and of W1-style float16 norm in a
            child process, top symbols (needs perf; hardware counters are not required).
isa         What the installed extension's machine code contains: AVX (ymm) instruction
            count, F16C conversions (vcvtph2ps), FMA, per objdump.
experiments Stand-alone C loops compiled here (needs a C compiler; csrc/ is not touched):
            sum of squares with 8 / 16 / 32 float64 lanes, float16 through F16C, and an AVX2
            clamp, timed in L2 and in DRAM against gradclip's kernels. They show what a change
            of the kernels would buy; they are not bit-compatible proposals (the lane count
            fixes the summation order).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

import gradclip
from gradclip import _C

SECTIONS = ("throughput", "overhead", "perf", "isa", "experiments")
L2_BYTES = 256 << 10
DRAM_BYTES = 256 << 20


def best_and_median(fn, reps: int) -> tuple[float, float]:
    samples = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        samples.append(time.perf_counter() - t0)
    return min(samples), statistics.median(samples)


def reps_for(nbytes: int) -> int:
    return 300 if nbytes <= (1 << 20) else 7


class threads:
    """Context manager: gradclip's thread count (a no-op where the extension has none)."""

    def __init__(self, n: int | None) -> None:
        self.n = n

    def __enter__(self):
        self.before = _C.get_num_threads() if hasattr(_C, "get_num_threads") else None
        if self.n is not None and hasattr(_C, "set_num_threads"):
            _C.set_num_threads(self.n)

    def __exit__(self, *exc):
        if self.before is not None:
            _C.set_num_threads(self.before)


def gbps(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / 1e9:6.1f}"


# ------------------------------------------------------------------------------------------


def section_throughput() -> None:
    print("## Kernel throughput, GB/s (best of the repetitions; bytes = reads + writes)\n")
    default = _C.get_num_threads() if hasattr(_C, "get_num_threads") else 1
    print(f"gradclip kernels: {getattr(_C, 'ISA', '?')}, default threads {default}\n")
    probe = np.ones(DRAM_BYTES // 8)
    t_read = best_and_median(lambda: np.add.reduce(probe), 7)[0]
    t_rw = best_and_median(lambda: np.multiply(probe, 1.0, out=probe), 7)[0]
    print(f"probes (DRAM, 1 thread): np.add.reduce read {gbps(DRAM_BYTES, t_read)}, "
          f"np.multiply in place {gbps(2 * DRAM_BYTES, t_rw)}\n")
    del probe
    tiny = [np.ones(1, np.float32)]
    call = best_and_median(lambda: gradclip.get_total_norm(tiny), 2000)[0]
    print(f"(L2 rates have the call overhead, {call * 1e6:.2f} µs, subtracted)\n")
    head = "| dtype | size | threads | get_total_norm (read N) | scale (clip_grads_with_norm_, 2N) | clamp (clip_grad_value_, 2N) |"
    print(head)
    print("|---|---|---|---|---|---|")
    for dtype in (np.float16, np.float32, np.float64):
        for nbytes, label in ((L2_BYTES, "L2"), (DRAM_BYTES, "DRAM")):
            a = np.full(nbytes // np.dtype(dtype).itemsize, 0.5, dtype=dtype)
            for nthreads in sorted({1, default}):
                with threads(nthreads):
                    reps = reps_for(nbytes)
                    sub = call if label == "L2" else 0.0
                    t_norm = best_and_median(lambda: gradclip.get_total_norm([a]), reps)[0] - sub
                    t_scale = best_and_median(lambda: gradclip.clip_grads_with_norm_([a], 1.0, 1.0), reps)[0] - sub
                    t_clamp = best_and_median(lambda: gradclip.clip_grad_value_([a], 1.0), reps)[0] - sub
                print(f"| {np.dtype(dtype).name} | {label} | {nthreads} | {gbps(nbytes, t_norm)} | "
                      f"{gbps(2 * nbytes, t_scale)} | {gbps(2 * nbytes, t_clamp)} |")
            del a
    print()
    section_optim_throughput(default)


def section_optim_throughput(default: int) -> None:
    """SGD (momentum) and Adam steps on one DRAM-sized float32 array, GB/s by the roofline's
    byte model (SGD 5N, Adam 7N), against torch's fused step."""
    import torch

    try:
        import gradclip.optim as goptim
    except ImportError:
        print("gradclip.optim not available; optimizer rows skipped\n")
        return
    n = DRAM_BYTES // 4
    p = np.full(n, 0.5, np.float32)
    g = np.full(n, 0.01, np.float32)
    param = gradclip.Parameter(p)
    param.grad = g
    tparam = torch.nn.Parameter(torch.from_numpy(p))
    tparam.grad = torch.from_numpy(g)
    print("| optimizer step (float32, 256 MiB per array) | bytes | gradclip 1 thread | gradclip default threads | torch fused |")
    print("|---|---|---|---|---|")
    for name, cls, tcls, hp, nbytes in (
        ("SGD momentum 0.9", goptim.SGD, torch.optim.SGD, {"lr": 1e-3, "momentum": 0.9}, 5 * DRAM_BYTES),
        ("Adam", goptim.Adam, torch.optim.Adam, {"lr": 1e-3}, 7 * DRAM_BYTES),
    ):
        opt = cls([param], **hp)
        opt.step()
        topt = tcls([tparam], **hp, fused=True)
        topt.step()
        cells = []
        for nthreads in (1, default):
            with threads(nthreads):
                cells.append(gbps(nbytes, best_and_median(opt.step, 5)[0]))
        cells.append(gbps(nbytes, best_and_median(topt.step, 5)[0]))
        print(f"| {name} | {nbytes // DRAM_BYTES}N | " + " | ".join(cells) + " |")
    print()


def section_overhead() -> None:
    import torch

    print("## Call and per-array overhead, µs (median; lists of 1-element float32 arrays)\n")
    counts = (1, 10, 100, 1000)
    impls = {
        "gradclip get_total_norm": lambda arrs, ts: gradclip.get_total_norm(arrs),
        "gradclip clip_grad_norm_": lambda arrs, ts: gradclip.clip_grad_norm_(arrs, 1e9),
        "gradclip clip_grad_value_": lambda arrs, ts: gradclip.clip_grad_value_(arrs, 1e9),
        "torch get_total_norm": lambda arrs, ts: torch.nn.utils.get_total_norm(ts),
        "numpy norm loop": lambda arrs, ts: sum(float(np.linalg.norm(a)) ** 2 for a in arrs),
        "numpy clip loop": lambda arrs, ts: [np.clip(a, -1e9, 1e9, out=a) for a in arrs],
    }
    print("| implementation | " + " | ".join(f"{n} arrays" for n in counts) + " | per array (slope) |")
    print("|---|" + "---|" * (len(counts) + 1))
    for name, fn in impls.items():
        row = []
        for n in counts:
            arrs = [np.ones(1, np.float32) for _ in range(n)]
            ts = [torch.from_numpy(a) for a in arrs]
            reps = 2000 if n <= 10 else (300 if n <= 100 else 60)
            row.append(best_and_median(lambda: fn(arrs, ts), reps)[1])
        slope = (row[-1] - row[-2]) / (counts[-1] - counts[-2])
        print(f"| {name} | " + " | ".join(f"{t * 1e6:.2f}" for t in row) + f" | {slope * 1e9:.0f} ns |")
    print()


PERF_SCRIPTS = {
    "W3 get_total_norm (1000 x 64 float32)": (
        "import numpy as np, gradclip\n"
        "a = [np.ones(64, np.float32) for _ in range(1000)]\n"
        "for _ in range(4000): gradclip.get_total_norm(a)\n"
    ),
    "SGD momentum step (2^26 float32, 1 thread)": (
        "import numpy as np, gradclip, gradclip.optim as go\nfrom gradclip import _C\n"
        "getattr(_C, 'set_num_threads', lambda n: None)(1)\n"
        "p = gradclip.Parameter(np.ones(1 << 26, np.float32)); p.grad = np.full(1 << 26, 0.1, np.float32)\n"
        "opt = go.SGD([p], lr=1e-3, momentum=0.9)\n"
        "for _ in range(15): opt.step()\n"
    ),
    "Adam step (2^26 float32, 1 thread)": (
        "import numpy as np, gradclip, gradclip.optim as go\nfrom gradclip import _C\n"
        "getattr(_C, 'set_num_threads', lambda n: None)(1)\n"
        "p = gradclip.Parameter(np.ones(1 << 26, np.float32)); p.grad = np.full(1 << 26, 0.1, np.float32)\n"
        "opt = go.Adam([p], lr=1e-3)\n"
        "for _ in range(8): opt.step()\n"
    ),
    "float16 get_total_norm (2^24 elements, 1 thread)": (
        "import numpy as np, gradclip\nfrom gradclip import _C\n"
        "getattr(_C, 'set_num_threads', lambda n: None)(1)\n"
        "a = np.ones(1 << 24, np.float16)\n"
        "for _ in range(40): gradclip.get_total_norm([a])\n"
    ),
}


def section_perf() -> None:
    print("## perf record -e cpu-clock (top symbols)\n")
    if shutil.which("perf") is None:
        print("perf not found; skipped\n")
        return
    with tempfile.TemporaryDirectory() as tmp:
        for title, code in PERF_SCRIPTS.items():
            script = os.path.join(tmp, "work.py")
            data = os.path.join(tmp, "perf.data")
            with open(script, "w") as f:
                f.write(code)
            rec = subprocess.run(["perf", "record", "-q", "-e", "cpu-clock", "-o", data, sys.executable, script],
                                 capture_output=True, text=True)
            if rec.returncode != 0:
                print(f"{title}: perf record failed: {rec.stderr.strip()[:200]}\n")
                continue
            rep = subprocess.run(["perf", "report", "-i", data, "--stdio", "--sort", "dso,sym"],
                                 capture_output=True, text=True)
            lines = [ln for ln in rep.stdout.splitlines() if ln.strip() and not ln.startswith("#")][:8]
            print(f"### {title}\n\n```\n" + "\n".join(lines) + "\n```\n")
            top = next((ln.split()[-1] for ln in lines if "_C." in ln), None)
            if top is None:
                continue
            ann = subprocess.run(["perf", "annotate", "-i", data, "--stdio", "-s", top],
                                 capture_output=True, text=True).stdout
            hot = []
            for ln in ann.splitlines():
                head, _, rest = ln.partition(":")
                try:
                    pct = float(head)
                except ValueError:
                    continue
                if pct >= 2.0:
                    hot.append(f"{pct:6.2f}  {' '.join(rest.split())}")
            if hot:
                print(f"hottest instructions of {top} (≥ 2 % of its samples; 'ss'/'sd' suffixes are "
                      "scalar, 'ps'/'pd' on ymm are 8/4-wide):\n\n```\n" + "\n".join(hot[:20]) + "\n```\n")


def section_isa() -> None:
    print("## Instructions in the installed extension (objdump -d)\n")
    if shutil.which("objdump") is None:
        print("objdump not found; skipped\n")
        return
    dis = subprocess.run(["objdump", "-d", "--no-show-raw-insn", _C.__file__], capture_output=True, text=True).stdout
    counts = {
        "instructions": 0, "ymm operands": 0, "vcvtph2ps (F16C half->float)": 0,
        "vcvtps2ph (F16C float->half)": 0, "vfmadd* (FMA)": 0, "vcvtps2pd (float->double)": 0,
    }
    for line in dis.splitlines():
        if "\t" not in line:
            continue
        counts["instructions"] += 1
        counts["ymm operands"] += "%ymm" in line
        counts["vcvtph2ps (F16C half->float)"] += "vcvtph2ps" in line
        counts["vcvtps2ph (F16C float->half)"] += "vcvtps2ph" in line
        counts["vfmadd* (FMA)"] += "vfmadd" in line or "vfmsub" in line or "vfnmadd" in line
        counts["vcvtps2pd (float->double)"] += "vcvtps2pd" in line
    for k, v in counts.items():
        print(f"- {k}: {v}")
    print()


EXPERIMENT_C = r"""
#include <stddef.h>
#include <stdint.h>
#include <immintrin.h>

double read_probe(const double *x, ptrdiff_t n) {
    __m256d a0 = _mm256_setzero_pd(), a1 = a0, a2 = a0, a3 = a0;
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a0 = _mm256_add_pd(a0, _mm256_loadu_pd(x + i));
        a1 = _mm256_add_pd(a1, _mm256_loadu_pd(x + i + 4));
        a2 = _mm256_add_pd(a2, _mm256_loadu_pd(x + i + 8));
        a3 = _mm256_add_pd(a3, _mm256_loadu_pd(x + i + 12));
    }
    double t[4];
    _mm256_storeu_pd(t, _mm256_add_pd(_mm256_add_pd(a0, a1), _mm256_add_pd(a2, a3)));
    double r = t[0] + t[1] + t[2] + t[3];
    for (; i < n; i++) r += x[i];
    return r;
}

void rw_probe(double *x, ptrdiff_t n, double c) {
    const __m256d cc = _mm256_set1_pd(c);
    ptrdiff_t i = 0;
    for (; i + 4 <= n; i += 4) _mm256_storeu_pd(x + i, _mm256_mul_pd(cc, _mm256_loadu_pd(x + i)));
    for (; i < n; i++) x[i] *= c;
}

static double hsum(const __m256d *acc, int nacc) {
    __m256d s = acc[0];
    for (int j = 1; j < nacc; j++) s = _mm256_add_pd(s, acc[j]);
    double t[4];
    _mm256_storeu_pd(t, s);
    return (t[0] + t[1]) + (t[2] + t[3]);
}

/* float32 -> float64 sum of squares with NACC ymm accumulators = 4*NACC lanes. */
#define SUMSQ_F32(NAME, NACC)                                                        \
double NAME(const float *x, ptrdiff_t n) {                                           \
    __m256d acc[NACC];                                                               \
    for (int j = 0; j < NACC; j++) acc[j] = _mm256_setzero_pd();                     \
    ptrdiff_t i = 0;                                                                 \
    for (; i + 4 * NACC <= n; i += 4 * NACC)                                         \
        for (int j = 0; j < NACC; j++) {                                             \
            const __m256d v = _mm256_cvtps_pd(_mm_loadu_ps(x + i + 4 * j));          \
            acc[j] = _mm256_add_pd(acc[j], _mm256_mul_pd(v, v));                     \
        }                                                                            \
    double r = hsum(acc, NACC);                                                      \
    for (; i < n; i++) r += (double)x[i] * (double)x[i];                             \
    return r;                                                                        \
}
SUMSQ_F32(sumsq_f32_lanes8, 2)
SUMSQ_F32(sumsq_f32_lanes16, 4)
SUMSQ_F32(sumsq_f32_lanes32, 8)

#define SUMSQ_F64(NAME, NACC)                                                        \
double NAME(const double *x, ptrdiff_t n) {                                          \
    __m256d acc[NACC];                                                               \
    for (int j = 0; j < NACC; j++) acc[j] = _mm256_setzero_pd();                     \
    ptrdiff_t i = 0;                                                                 \
    for (; i + 4 * NACC <= n; i += 4 * NACC)                                         \
        for (int j = 0; j < NACC; j++) {                                             \
            const __m256d v = _mm256_loadu_pd(x + i + 4 * j);                        \
            acc[j] = _mm256_add_pd(acc[j], _mm256_mul_pd(v, v));                     \
        }                                                                            \
    double r = hsum(acc, NACC);                                                      \
    for (; i < n; i++) r += x[i] * x[i];                                             \
    return r;                                                                        \
}
SUMSQ_F64(sumsq_f64_lanes8, 2)
SUMSQ_F64(sumsq_f64_lanes16, 4)
SUMSQ_F64(sumsq_f64_lanes32, 8)

/* float16 through F16C (exact, like any half->float conversion), 16 float64 lanes. */
double sumsq_f16_f16c(const uint16_t *x, ptrdiff_t n) {
    __m256d acc[4] = {_mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd(), _mm256_setzero_pd()};
    ptrdiff_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m256 f0 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i)));
        const __m256 f1 = _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(x + i + 8)));
        const __m256d d0 = _mm256_cvtps_pd(_mm256_castps256_ps128(f0));
        const __m256d d1 = _mm256_cvtps_pd(_mm256_extractf128_ps(f0, 1));
        const __m256d d2 = _mm256_cvtps_pd(_mm256_castps256_ps128(f1));
        const __m256d d3 = _mm256_cvtps_pd(_mm256_extractf128_ps(f1, 1));
        acc[0] = _mm256_add_pd(acc[0], _mm256_mul_pd(d0, d0));
        acc[1] = _mm256_add_pd(acc[1], _mm256_mul_pd(d1, d1));
        acc[2] = _mm256_add_pd(acc[2], _mm256_mul_pd(d2, d2));
        acc[3] = _mm256_add_pd(acc[3], _mm256_mul_pd(d3, d3));
    }
    double r = hsum(acc, 4);
    for (; i < n; i++) {
        const double v = _cvtsh_ss(x[i]);
        r += v * v;
    }
    return r;
}

/* clamp with NaN kept: max/min return their second operand when either is NaN. */
void clamp_f32_avx2(float *x, ptrdiff_t n, float lo, float hi) {
    const __m256 l = _mm256_set1_ps(lo), h = _mm256_set1_ps(hi);
    ptrdiff_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(x + i, _mm256_min_ps(h, _mm256_max_ps(l, _mm256_loadu_ps(x + i))));
    for (; i < n; i++) {
        const float v = x[i];
        x[i] = v != v ? v : (v < lo ? lo : (v > hi ? hi : v));
    }
}

void clamp_f64_avx2(double *x, ptrdiff_t n, double lo, double hi) {
    const __m256d l = _mm256_set1_pd(lo), h = _mm256_set1_pd(hi);
    ptrdiff_t i = 0;
    for (; i + 4 <= n; i += 4)
        _mm256_storeu_pd(x + i, _mm256_min_pd(h, _mm256_max_pd(l, _mm256_loadu_pd(x + i))));
    for (; i < n; i++) {
        const double v = x[i];
        x[i] = v != v ? v : (v < lo ? lo : (v > hi ? hi : v));
    }
}
"""


def build_experiments(tmp: str) -> ctypes.CDLL | None:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if cc is None:
        return None
    src = os.path.join(tmp, "experiments.c")
    lib = os.path.join(tmp, "experiments.so")
    with open(src, "w") as f:
        f.write(EXPERIMENT_C)
    flags = ["-O3", "-std=c11", "-mavx2", "-mfma", "-mf16c", "-ffp-contract=off", "-shared", "-fPIC"]
    res = subprocess.run([cc, *flags, "-o", lib, src], capture_output=True, text=True)
    if res.returncode != 0:
        print(f"compiling the experiments failed: {res.stderr[:300]}")
        return None
    so = ctypes.CDLL(lib)
    ptr, n = ctypes.c_void_p, ctypes.c_ssize_t
    for name in ("read_probe", "sumsq_f32_lanes8", "sumsq_f32_lanes16", "sumsq_f32_lanes32",
                 "sumsq_f64_lanes8", "sumsq_f64_lanes16", "sumsq_f64_lanes32", "sumsq_f16_f16c"):
        getattr(so, name).restype = ctypes.c_double
        getattr(so, name).argtypes = [ptr, n]
    so.rw_probe.argtypes = [ptr, n, ctypes.c_double]
    so.clamp_f32_avx2.argtypes = [ptr, n, ctypes.c_float, ctypes.c_float]
    so.clamp_f64_avx2.argtypes = [ptr, n, ctypes.c_double, ctypes.c_double]
    return so


def section_experiments() -> None:
    print("## Stand-alone AVX2 loops vs gradclip's kernels, GB/s (1 thread, best of the repetitions)\n")
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    if not all(f in flags for f in ("avx2", "fma", "f16c")):
        print("CPU without AVX2/FMA/F16C; skipped\n")
        return
    with tempfile.TemporaryDirectory() as tmp, threads(1):
        so = build_experiments(tmp)
        if so is None:
            print("no C compiler; skipped\n")
            return
        tiny = [np.ones(1, np.float32)]
        call = best_and_median(lambda: gradclip.get_total_norm(tiny), 2000)[0]
        print("| loop | bytes | L2 (256 KiB) | DRAM (256 MiB) |")
        print("|---|---|---|---|")
        for dtype, rows in (
            (np.float64, [("C read probe (4 ymm accumulators)", "read", lambda a: so.read_probe(a.ctypes.data, a.size)),
                          ("C in-place scale probe", "rw", lambda a: so.rw_probe(a.ctypes.data, a.size, 1.0)),
                          ("np.add.reduce (run.py's read probe)", "read", lambda a: np.add.reduce(a)),
                          ("gradclip get_total_norm float64", "read", lambda a: gradclip.get_total_norm([a])),
                          ("sum of squares f64, 8 lanes (2 ymm)", "read", lambda a: so.sumsq_f64_lanes8(a.ctypes.data, a.size)),
                          ("sum of squares f64, 16 lanes (4 ymm)", "read", lambda a: so.sumsq_f64_lanes16(a.ctypes.data, a.size)),
                          ("sum of squares f64, 32 lanes (8 ymm)", "read", lambda a: so.sumsq_f64_lanes32(a.ctypes.data, a.size)),
                          ("gradclip clip_grad_value_ float64", "rw", lambda a: gradclip.clip_grad_value_([a], 1.0)),
                          ("AVX2 max/min clamp f64", "rw", lambda a: so.clamp_f64_avx2(a.ctypes.data, a.size, -1.0, 1.0))]),
            (np.float32, [("gradclip get_total_norm float32", "read", lambda a: gradclip.get_total_norm([a])),
                          ("sum of squares f32->f64, 8 lanes (2 ymm)", "read", lambda a: so.sumsq_f32_lanes8(a.ctypes.data, a.size)),
                          ("sum of squares f32->f64, 16 lanes (4 ymm)", "read", lambda a: so.sumsq_f32_lanes16(a.ctypes.data, a.size)),
                          ("sum of squares f32->f64, 32 lanes (8 ymm)", "read", lambda a: so.sumsq_f32_lanes32(a.ctypes.data, a.size)),
                          ("gradclip clip_grad_value_ float32", "rw", lambda a: gradclip.clip_grad_value_([a], 1.0)),
                          ("AVX2 max/min clamp f32", "rw", lambda a: so.clamp_f32_avx2(a.ctypes.data, a.size, -1.0, 1.0))]),
            (np.float16, [("gradclip get_total_norm float16", "read", lambda a: gradclip.get_total_norm([a])),
                          ("sum of squares f16 via F16C, 16 lanes", "read", lambda a: so.sumsq_f16_f16c(a.ctypes.data, a.size))]),
        ):
            arrays = {size: np.full(size // np.dtype(dtype).itemsize, 0.5, dtype=dtype) for size in (L2_BYTES, DRAM_BYTES)}
            for label, kind, fn in rows:
                cells = []
                for size, a in arrays.items():
                    t = best_and_median(lambda: fn(a), reps_for(size))[0]
                    if size == L2_BYTES and label.startswith(("gradclip", "np.")):
                        t -= call  # Python-level call overhead, comparable to ctypes' own
                    cells.append(gbps(size * (2 if kind == "rw" else 1), t))
                print(f"| {label} | {'read N' if kind == 'read' else 'read+write N'} | {cells[0]} | {cells[1]} |")
            del arrays
    print()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", default=",".join(SECTIONS), help="comma-separated: " + ", ".join(SECTIONS))
    args = ap.parse_args(argv)
    chosen = [s.strip() for s in args.sections.split(",") if s.strip()]
    print(f"# gradclip kernel profile (gradclip {gradclip.__version__}, NumPy {np.__version__}, "
          f"load average {os.getloadavg()[0]:.2f})\n")
    for name in chosen:
        if name not in SECTIONS:
            ap.error(f"unknown section {name!r}")
        globals()[f"section_{name}"]()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
