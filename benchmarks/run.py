"""Benchmark gradclip against torch 2.x on CPU, plain NumPy and the hardware's streaming limit.

    python benchmarks/run.py                      # full run (several minutes)
    python benchmarks/run.py --quick              # CI smoke run: tiny sizes; numbers not comparable
    python benchmarks/run.py --only W1,W3 --ops get_total_norm,clip_grad_norm_
    python benchmarks/run.py --issues 12,16       # only the rows those issues asked for
    python benchmarks/run.py --out benchmarks/results/latest.json --wide benchmarks/results/latest.md

Prints the machine, the library versions, the streaming limit measured by a C probe
(benchmarks/stream_probe.c: every core, vectorised, best of several runs) and a compact table
(fits 120 columns) of median times with ratios (baseline time / gradclip time) and the
performance targets, then gradclip on torch tensors beside gradclip on ndarrays (issue 16's
rows) and the bytes each optimizer step moves (for the optimizers run); the wide table (every
torch variant, spreads, probes) goes to --wide and every number to the JSON file. Every row interleaves its implementations in a fresh random
order each round; rows marked "mm" run a matmul right before every timed call (a training
loop), and nobody waits for other libraries' threads to go idle. Runs without torch (its
columns then say "not installed"). See benchmarks/README.md for what each column means.
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time

_T0 = time.perf_counter()  # before importing torch, which takes seconds

try:
    import torch  # noqa: E402
except ImportError:
    torch = None

import cases  # noqa: E402
import cases_optim  # noqa: E402
import gradclip  # noqa: E402
import harness  # noqa: E402
import probe as stream  # noqa: E402

# "torch reference": torch running the published formula where torch has no such function.
TORCH_COLUMNS = ["torch foreach=None", "torch foreach=False", "torch foreach=True", "torch fused", "torch reference"]
COLUMNS = ["gradclip unfused", "gradclip plain", "gradclip ndarray", *TORCH_COLUMNS, "numpy"]
LIMIT_MAX = 1.10
CLIP_OPS = ("get_total_norm", "clip_grad_norm_", "clip_grad_value_", "clip_grads_with_norm_")


def fmt_time(s: float | None) -> str:
    if s is None or s != s:
        return "—"
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("µs", 1e-6)):
        if s >= scale:
            return f"{s / scale:.3g} {unit}"
    return f"{s / 1e-9:.3g} ns"


def fmt_bytes(n: float) -> str:
    for unit in ("GB", "MB", "kB"):
        scale = {"GB": 1e9, "MB": 1e6, "kB": 1e3}[unit]
        if n >= scale:
            return f"{n / scale:.3g} {unit}"
    return f"{n:.0f} B"


def parse_size(text: str) -> int:
    units = {"K": 1024, "M": 1024**2, "G": 1024**3}
    return int(text[:-1]) * units[text[-1]] if text and text[-1] in units else int(text or 0)


# ------------------------------------------------------------------------------------------
# Running one case


def run_case(case: cases.Case, probe: stream.StreamProbe | None, budget: float, min_rounds: int,
             max_rounds: int, quick: bool) -> dict:
    impls = dict(case.impls)
    if probe is not None and case.traffic is not None:
        impls.update(probe.kernels(case.traffic.read, case.traffic.rw))
    if case.context == cases.SHARED_CONTEXT:
        gradclip.share_blas_threads(True)
        time.sleep(0.3)  # OpenBLAS's own threads, spinning since the last row, go to sleep (~0.1 s)
    try:
        timings = harness.time_interleaved(impls, case.setup, budget, min_rounds, max_rounds, before=case.before)
    finally:
        if case.context == cases.SHARED_CONTEXT:
            gradclip.share_blas_threads(False)
    med = {name: t.median for name, t in timings.items()}
    best = {name: t.best for name, t in timings.items()}
    probes = {name: best.pop(name) for name in list(best) if name.startswith("limit")}
    # How far the probes' own medians sit above their best runs in these rounds: the noise
    # floor of a "median against the best probe" ratio on this machine at this moment.
    probe_noise = {name: med.pop(name) / probes[name] for name in probes}
    probe_modes = {}
    if probe is not None and probe.kind == "cache" and probes:
        # The best single pass, timed in C, on one core or every core (the call's own time is
        # mostly ctypes and OpenMP's wake-up at this size).
        passes = probe.pass_bests()
        probes = {name: passes[name] for name in probes}
        probe_modes = {name: t for name, t in passes.items() if name not in probes}
    limit = stream.StreamProbe.limit(probes) if probes else None
    gc_time = med.get("gradclip")
    ratios = {name: t / gc_time for name, t in med.items() if gc_time and name != "gradclip"}
    torch_names = [c for c in TORCH_COLUMNS if c in med]
    torch_best = min(torch_names, key=lambda c: med[c]) if torch_names else None
    result = {
        "issue": case.issue,
        "workload": case.workload,
        "op": case.op,
        "dtype": case.dtype,
        "context": case.context,
        "n_arrays": case.n_arrays,
        "n_elements": case.n_elements,
        "nbytes": case.nbytes,
        "rounds": len(next(iter(timings.values())).samples),
        "median_s": med,
        "min_s": best,
        "spread_iqr_over_median": {name: t.spread for name, t in timings.items()},
        "unavailable": case.unavailable,
        "ratios_baseline_over_gradclip": ratios,
        "torch_fastest": torch_best,
        "torch_best_over_gradclip": (med[torch_best] / gc_time) if (gc_time and torch_best) else None,
        "numpy_over_gradclip": ratios.get("numpy"),
        "traffic": None if case.traffic is None else vars(case.traffic),
        "limit_s": limit,
        "limit_probes_best_s": probes,
        "limit_probe_modes_s": probe_modes,
        "limit_probe_median_over_best": probe_noise if probe is not None and probe.kind == "memory" else {},
        "limit_kind": None if probe is None else probe.kind,
        "limit_ratio": (gc_time / limit) if (gc_time and limit) else None,
        # The same against the probes' medians in these rounds: how gradclip streams next to a
        # loop that does nothing but stream, under the same disturbance.
        "limit_ratio_probe_median": (
            gc_time / sum(t * probe_noise[name] for name, t in probes.items())
            if (gc_time and limit and probe is not None and probe.kind == "memory") else None),
        "gradclip_spread": timings["gradclip"].spread if "gradclip" in timings else None,
        "notes": case.notes,
    }
    result["targets"] = [] if quick else evaluate_targets(result, case.targets)
    return result


def evaluate_targets(r: dict, declared: list[tuple[str, str, float, bool]] | None = None) -> list[dict]:
    """The targets that apply to this row, each with its measured value: those the case
    declares (name, result key, bound, higher is better), else issue 11's (and 14's)."""
    if declared:
        checks = [(name, r[key], bound, higher) for name, key, bound, higher in declared]
    else:
        checks = _issue11_checks(r)
    out = []
    for name, value, bound, higher in checks:
        ok = None if value is None else (value >= bound if higher else value <= bound)
        out.append({"target": name, "value": value, "bound": bound, "higher_is_better": higher, "pass": ok})
    return out


def _issue11_checks(r: dict) -> list[tuple[str, float | None, float, bool]]:
    """(name, value, bound, higher_is_better) of the performance issue's targets for this row."""
    w, op, ctx = r["workload"], r["op"], r["context"]
    checks: list[tuple[str, float | None, float, bool]] = []
    clip = op in CLIP_OPS
    if w in ("W1", "W2") and clip and ctx == "alone":
        checks.append(("limit", r["limit_ratio"], LIMIT_MAX, False))
    if w in ("W1", "W2") and clip and ctx != "alone":
        checks += [("vs NumPy", r["numpy_over_gradclip"], 1.0, True), ("vs torch", r["torch_best_over_gradclip"], 1.3, True)]
    if w == "W2" and not clip:
        checks.append(("limit", r["limit_ratio"], LIMIT_MAX, False))
    if w == "W3" and clip:
        checks += [("vs torch", r["torch_best_over_gradclip"], 30.0, True), ("vs NumPy", r["numpy_over_gradclip"], 5.0, True)]
    if w == "W4" and clip:
        checks += [("vs torch", r["torch_best_over_gradclip"], 10.0, True), ("vs NumPy", r["numpy_over_gradclip"], 3.0, True)]
    if op == "clip_grad_norm_ return_info":  # issue 14: at most 5 % over the plain call
        checks.append(("vs plain", r["ratios_baseline_over_gradclip"].get("gradclip plain"), 0.95, True))
    return checks


# ------------------------------------------------------------------------------------------
# Reporting


def header_lines(info: dict, probes: dict, overhead: float, quick: bool, loads: list) -> list[str]:
    mem = info["memory_bytes"]
    caches = ", ".join(f"{k} {v}" for k, v in info["caches"].items())
    lines = [
        f"- machine: {info['cpu']}, {info['cores']} cores ({', '.join(info['cpu_flags'])}), "
        f"{mem / 2**30:.0f} GiB RAM, caches {caches}; {info['platform']}",
        f"- Python {info['python']}, NumPy {info['numpy']}, torch {info['torch']} "
        f"({info['torch_threads'] or '-'} threads), gradclip {info['gradclip']} (commit {info['gradclip_commit']}, "
        f"kernels {info['gradclip_isa'] or '?'}, {info['gradclip_threads'] or 1} thread(s))",
        f"- streaming limit (benchmarks/stream_probe.c, {probes['threads']} OpenMP threads, best of runs, "
        f"{fmt_bytes(probes['buffer_bytes'])} buffer): read {probes['read_Bps'] / 1e9:.1f} GB/s "
        f"(float32 widened to float64, squared and summed), read+write in place {probes['rw_Bps'] / 1e9:.1f} GB/s "
        "(x *= c); each row's limit is re-measured inside that row's rounds, on its own bytes",
    ]
    if info["env"]:
        lines.append("- environment: " + " ".join(f"{k}={v}" for k, v in info["env"].items()))
    lines.append(
        f"- timer overhead per sample {fmt_time(overhead)}; load average before/after "
        + " / ".join("—" if la is None else f"{la[0]:.2f}" for la in loads)
        + (" (shared machine: other processes were running)" if any(la and la[0] > 0.5 for la in loads) else "")
    )
    if quick:
        lines.append("- **--quick: tiny sizes and few rounds, a smoke test. These numbers are not comparable "
                     "with anything and no target is checked.**")
    return lines


def _targets_cell(r: dict, short: bool) -> str:
    tg = []
    for t in r["targets"]:
        cmp = "≥" if t["higher_is_better"] else "≤"
        if t["pass"] is None:
            tg.append(f"{t['target']}: n/a")
        elif short:
            tg.append(f"{'ok' if t['pass'] else 'MISS'} {t['target'].replace('vs ', '')} {t['value']:.3g}")
        else:
            tg.append(f"{t['target']} {t['value']:.2f} {cmp}{t['bound']:g} {'pass' if t['pass'] else '**MISS**'}")
    return "; ".join(tg) or "—"


def _time_ratio(r: dict, name: str | None) -> str:
    if name is None or name not in r["median_s"]:
        return r["unavailable"].get(name, "—") if name else "—"
    ratio = r["ratios_baseline_over_gradclip"].get(name)
    return fmt_time(r["median_s"][name]) + (f" {ratio:.2f}x" if ratio else "")


def compact_lines(results: list[dict]) -> list[str]:
    """One line per row, at most 120 columns: gradclip, the fastest torch variant, the NumPy
    loop (each with baseline/gradclip), the limit (with gradclip/limit) and the targets."""
    head = f"{'row':<33} {'gradclip':>9} {'torch fastest':>15} {'NumPy loop':>15} {'limit':>12}  targets"
    lines = [head, "-" * len(head)]
    for r in results:
        dtype = {"float16": "f16", "float32": "f32", "float64": "f64"}.get(r["dtype"], r["dtype"])
        context = {"alone": "", cases.SHARED_CONTEXT: " mm+s"}.get(r["context"], " mm")
        suffix = f" {dtype}{context}"
        row = f"{r['workload']} {r['op']}"[:33 - len(suffix)] + suffix
        gc_cell = fmt_time(r["median_s"].get("gradclip"))
        torch_cell = _time_ratio(r, r["torch_fastest"]) if r["torch_fastest"] else (
            cases.TORCH_MISSING if any(v == cases.TORCH_MISSING for v in r["unavailable"].values()) else "—")
        limit = "—" if not r["limit_s"] else f"{fmt_time(r['limit_s'])} {r['limit_ratio']:.2f}"
        line = (f"{row:<33} {gc_cell:>9} {torch_cell:>15} {_time_ratio(r, 'numpy'):>15} {limit:>12}  "
                f"{_targets_cell(r, short=True)}")
        lines.append(line[:120])
    return lines


def table_lines(results: list[dict]) -> list[str]:
    """The wide Markdown table: every implementation, spreads, probes, targets in full."""
    used = [c for c in COLUMNS if any(c in r["median_s"] or c in r["unavailable"] for r in results)]
    head = ["workload", "operation", "dtype", "context", "gradclip", "spread", *used, "limit (gc/limit)",
            "gc / probes' median", "targets"]
    lines = ["| " + " | ".join(head) + " |", "|" + "|".join("---" for _ in head) + "|"]
    for r in results:
        med = r["median_s"]
        gc_cell = fmt_time(med.get("gradclip")) if "gradclip" in med else r["unavailable"].get("gradclip", "—")
        spread = r.get("gradclip_spread")
        cells = [r["workload"], r["op"], r["dtype"], r["context"], gc_cell,
                 "—" if spread is None or spread != spread else f"{spread:.0%}"]
        for c in used:
            if c in med:
                ratio = r["ratios_baseline_over_gradclip"].get(c)
                cells.append(fmt_time(med[c]) + (f" ({ratio:.2f}×)" if ratio else ""))
            else:
                cells.append(r["unavailable"].get(c, "—"))
        if r["limit_s"]:
            cells.append(f"{fmt_time(r['limit_s'])} {r['limit_kind']} ({r['limit_ratio']:.2f})")
        else:
            cells.append("—")
        at_median = r.get("limit_ratio_probe_median")
        cells.append("—" if at_median is None else f"{at_median:.2f}")
        cells.append(_targets_cell(r, short=False))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def tensor_lines(results: list[dict]) -> list[str]:
    """Issue 16: gradclip on torch tensors against gradclip on the same memory as ndarrays,
    both against torch's fastest variant, from the same interleaved rounds."""
    rows = [r for r in results if "gradclip ndarray" in r["median_s"]]
    if not rows:
        return []
    head = (f"{'row':<33} {'on tensors':>10} {'on ndarrays':>11} {'torch fastest':>13} {'torch/tensors':>13} "
            f"{'torch/ndarrays':>14} {'tensors/ndarrays':>16}")
    lines = ["", "gradclip on torch tensors (issue 16) and on the same memory as ndarrays, in the same rounds:", "",
             "```text", head, "-" * len(head)]
    for r in rows:
        med = r["median_s"]
        gc_t, gc_nd = med.get("gradclip"), med["gradclip ndarray"]
        torch_t = med.get(r["torch_fastest"]) if r["torch_fastest"] else None

        def ratio(a: float | None, b: float | None) -> str:
            return f"{a / b:.3g}x" if a and b else "—"

        lines.append(f"{r['workload'] + ' ' + r['op']:<33} {fmt_time(gc_t):>10} {fmt_time(gc_nd):>11} "
                     f"{fmt_time(torch_t):>13} {ratio(torch_t, gc_t):>13} {ratio(torch_t, gc_nd):>14} "
                     f"{ratio(gc_t, gc_nd):>16}")
    return lines + ["```"]


def byte_lines(results: list[dict]) -> list[str]:
    """The bytes each optimizer's rows count (their limit), for the optimizers that ran."""
    specs = []
    for r in results:
        spec = cases_optim.spec_of(r["op"])
        if spec is not None and spec not in specs:
            specs.append(spec)
    if not specs:
        return []
    n = sum(math.prod(s) for s in cases.workload_shapes("W2", quick=False)) * 4
    return (["", "Bytes an optimizer step must move (N = the gradients' bytes); a row's limit is them at the "
             "probes' rates:", ""] + cases_optim.byte_table_lines(specs, n, f"W2 float32 (N = {fmt_bytes(n)})"))


# ------------------------------------------------------------------------------------------
# Memory


def memory_report(quick: bool, workloads: set[str]) -> list[dict]:
    """Peak extra memory of clip_grad_norm_ (gradclip, NumPy loop, torch) per workload."""
    rows = []
    for w in ("W1", "W2", "W3"):
        if w not in workloads:
            continue
        case = cases.clip_case(w, "clip_grad_norm_", "float32", quick)
        for name in ("gradclip", "numpy", "torch foreach=None"):
            if name not in case.impls:
                continue
            fn = case.impls[name]
            case.setup()
            fn()  # first call outside the measurement (lazy imports, caches)
            case.setup()
            traced = harness.peak_traced_bytes(fn)
            case.setup()
            rss = harness.peak_rss_delta(fn)
            rows.append({
                "workload": w, "impl": name, "n_arrays": case.n_arrays, "gradient_bytes": case.nbytes,
                "tracemalloc_peak_bytes": traced if not name.startswith("torch") else None,
                "rss_peak_delta_bytes": rss,
                # gradclip's per-call tables come from scratch blocks kept between calls
                # (csrc/gc_scratch.c), which tracemalloc does not see: what the process keeps.
                "scratch_kept_bytes": gradclip._C._scratch()[1] if name == "gradclip" else None,
            })
        del case
        gc.collect(1)
    return rows


def memory_lines(rows: list[dict]) -> list[str]:
    lines = [
        "| workload | arrays | gradients | implementation | tracemalloc peak | per array | peak RSS growth | scratch kept |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for m in rows:
        tm = m["tracemalloc_peak_bytes"]
        lines.append(
            f"| {m['workload']} | {m['n_arrays']} | {fmt_bytes(m['gradient_bytes'])} | {m['impl']} | "
            f"{'— (not traced)' if tm is None else fmt_bytes(tm)} | "
            f"{'—' if tm is None else fmt_bytes(tm / m['n_arrays'])} | "
            f"{'—' if m['rss_peak_delta_bytes'] is None else fmt_bytes(m['rss_peak_delta_bytes'])} | "
            f"{'—' if m.get('scratch_kept_bytes') is None else fmt_bytes(m['scratch_kept_bytes'])} |"
        )
    return lines


# ------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="tiny sizes and few rounds (CI smoke test)")
    ap.add_argument("--out", default="benchmarks/results/latest.json", help="JSON output path")
    ap.add_argument("--wide", default="benchmarks/results/latest.md", help="wide Markdown table output path")
    ap.add_argument("--only", default=None,
                    help="comma-separated workloads (default W1,W2,W3,W4,M1; with --quick, naming them also "
                         "runs issue 12's optimizers on W2 and W3)")
    ap.add_argument("--ops", default=None, help="comma-separated substrings of operation names")
    ap.add_argument("--issues", default=None,
                    help="comma-separated issues whose rows to run: 11 (the performance targets), 12 (more "
                         "optimizers), 14 (beyond torch), 16 (gradclip on torch tensors); default all")
    ap.add_argument("--budget", type=float, default=None, help="seconds of timing per case")
    ap.add_argument("--no-memory", action="store_true", help="skip the memory measurement")
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="SECONDS",
                    help="first wait up to SECONDS for the CPUs to be idle (shared machines)")
    ap.add_argument("--torch-threads", type=int, default=None,
                    help="torch.set_num_threads value (default: os.cpu_count())")
    args = ap.parse_args(argv)

    workloads = {w.strip().upper() for w in (args.only or "W1,W2,W3,W4,M1").split(",") if w.strip()}
    ops = None if args.ops is None else {o.strip() for o in args.ops.split(",") if o.strip()}
    issues = None if args.issues is None else {i.strip().lstrip("#") for i in args.issues.split(",") if i.strip()}
    quick = args.quick
    budget = args.budget if args.budget is not None else (0.05 if quick else 3.0)
    min_rounds, max_rounds = (1, 20) if quick else (5, 400)

    if torch is not None:
        torch.set_num_threads(args.torch_threads or os.cpu_count() or 1)
    if args.wait_quiet > 0:
        busy = harness.wait_for_quiet(args.wait_quiet)
        print(f"  (CPUs {'?' if busy is None else f'{busy:.0%}'} busy when starting)", file=sys.stderr, flush=True)
    loads = [harness.load_average()]
    info = harness.machine_info()
    l3 = parse_size(info["caches"].get("L3", "0"))

    probe_bytes = (16 << 20) if quick else (512 << 20)
    probe = stream.StreamProbe(probe_bytes)
    probes = probe.measure(reps=3 if quick else 9)
    overhead = harness.timer_overhead()
    print(f"  (setup and bandwidth probes: {time.perf_counter() - _T0:.1f} s since start)", file=sys.stderr, flush=True)

    print(f"# gradclip benchmarks{' (--quick)' if quick else ''}\n", flush=True)
    results = []
    t_start = time.perf_counter()
    for factory in cases.all_cases(quick, workloads, ops, issues, every_workload=args.only is not None):
        t_case = time.perf_counter()
        case = factory()
        # Rows far larger than the caches are bounded by memory; small ones (W4) by the cache
        # they live in, probed on a buffer of their own size. Rows after a matmul have no limit
        # of their own: their targets compare them with their peers in the same situation.
        if case.context != "alone" or case.traffic is None:
            row_probe = None
        elif l3 > 0 and case.nbytes >= 2 * l3:
            row_probe = probe
        elif case.workload == "W4":
            row_probe = stream.StreamProbe(max(case.traffic.read, case.traffic.rw // 2, 4096), kind="cache",
                                           float64=case.dtype == "float64")
        else:
            row_probe = None
        r = run_case(case, row_probe, budget, min_rounds, max_rounds, quick)
        results.append(r)
        print(f"  {r['workload']} {r['op']} {r['dtype']}: gradclip {fmt_time(r['median_s'].get('gradclip'))}"
              f" ({r['rounds']} rounds, {time.perf_counter() - t_case:.1f} s)", file=sys.stderr, flush=True)
        del case
        gc.collect(1)  # a full collection walks torch's large heap: 0.4 s a time
    elapsed = time.perf_counter() - t_start
    memory = [] if args.no_memory else memory_report(quick, workloads)
    loads.append(harness.load_average())

    header = header_lines(info, probes, overhead, quick, loads)
    out = header + ["", "```text", *compact_lines(results), "```"]
    out += tensor_lines(results) + byte_lines(results)
    if memory:
        out += ["", "Peak extra memory of clip_grad_norm_ (float32):", ""] + memory_lines(memory)
    unavailable = {v for r in results for v in r["unavailable"].values()} - {cases.TORCH_MISSING}
    notes = sorted({n for r in results for n in r["notes"]} | unavailable)
    if notes:
        out += ["", "Notes:"] + [f"- {n}" for n in notes]
    print("\n".join(out))
    print(f"\n({len(results)} cases timed in {elapsed:.0f} s; {time.perf_counter() - _T0:.0f} s in all)")

    if args.wide:
        os.makedirs(os.path.dirname(args.wide) or ".", exist_ok=True)
        with open(args.wide, "w") as f:
            f.write("\n".join(header + [""] + table_lines(results)) + "\n")
        print(f"wrote {args.wide}")
    if args.out:
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out, "w") as f:
            json.dump({"quick": quick, "machine": info, "probes": probes, "timer_overhead_s": overhead,
                       "load_average": loads, "cases": results, "memory": memory}, f, indent=1, default=str)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
