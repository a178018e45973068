"""What the demo shows: a live progress line, the summary table and the figure."""

from __future__ import annotations

import math
import textwrap
import time
from pathlib import Path
from typing import Any, Callable, TextIO

import numpy as np

from .train import Config, RunResult

__all__ = ["Progress", "summary", "plot"]


class Progress:
    """A one-line progress bar, redrawn in place on a terminal.

    When `stream` is not a terminal (a log file, a CI job, a pipe) carriage returns would
    pile up into one enormous line, so it prints a plain line every tenth of the run.
    """

    def __init__(
        self,
        label: str,
        total: int,
        stream: TextIO,
        *,
        clipping: bool = True,
        interval: float = 0.1,
    ) -> None:
        self.label, self.total, self.stream, self.interval = label, total, stream, interval
        self.clipping = clipping
        isatty = getattr(stream, "isatty", None)
        self.tty = bool(isatty and isatty())
        self.start = time.perf_counter()
        self.last_draw = -math.inf
        self.every = max(1, total // 10)
        self.width = 0

    def __call__(self, step: int, loss: float, norm: float, n_clipped: int) -> None:
        if self.tty:
            now = time.perf_counter()
            if now - self.last_draw >= self.interval or step == self.total:
                self.last_draw = now
                line = self._line(step, loss, norm, n_clipped)
                # Pad over the remains of a longer previous line.
                self.stream.write("\r" + line.ljust(self.width))
                self.width = len(line)
                self.stream.flush()
        elif step % self.every == 0 or step == self.total:
            self.stream.write(self._line(step, loss, norm, n_clipped) + "\n")
            self.stream.flush()

    def close(self, result: RunResult) -> None:
        """End the line; say so if the run stopped early."""
        if self.tty and self.width:
            self.stream.write("\n")
        if result.nonfinite_step is not None:
            self.stream.write(
                f"{self.label}: loss or gradient norm not finite at step "
                f"{result.nonfinite_step + 1}; stopped\n"
            )
        self.stream.flush()

    def _line(self, step: int, loss: float, norm: float, n_clipped: int) -> str:
        filled = round(20 * step / self.total)
        bar = "#" * filled + "-" * (20 - filled)
        width = len(str(self.total))
        clipped = f"clipped {100 * n_clipped / step:3.0f}%  " if self.clipping else ""
        return (
            f"{self.label:<9} [{bar}] {step:>{width}}/{self.total}  "
            f"loss {loss:8.3f}  grad norm {norm:9.3g}  "
            f"{clipped}{time.perf_counter() - self.start:5.1f}s"
        )


def _num(x: float, decimals: int = 3) -> str:
    if not math.isfinite(x):
        return str(x)
    return f"{x:.{decimals}f}" if abs(x) < 1e4 else f"{x:.3g}"


def _finite(stat: Callable[[np.ndarray], Any], values: np.ndarray) -> float:
    """`stat` of the finite `values`: a run stopped by a NaN still has a history."""
    values = values[np.isfinite(values)]
    return float(stat(values)) if len(values) else math.nan


def outcome(result: RunResult) -> str:
    """One word (and a reason) for how a run ended."""
    if result.nonfinite_step is not None:
        return f"DIVERGED (non-finite at step {result.nonfinite_step + 1})"
    if result.diverged:
        return "DIVERGED (worse than uniform)"
    if result.learned:
        return "learned"
    return "did not learn"


def summary(config: Config, runs: list[RunResult], sample: str | None) -> str:
    """The table comparing the runs, and a sample of generated text."""
    first = runs[0]
    rows = [
        ("final loss", [_num(r.final_loss) for r in runs]),
        ("best loss", [_num(r.best_loss) for r in runs]),
        ("held-out loss", [_num(r.heldout_loss) for r in runs]),
        ("steps clipped", [
            f"{int(r.clipped.sum())}/{len(r.clipped)} ({100 * r.clipped.mean():.0f}%)"
            if r.clip else "-" for r in runs
        ]),
        ("median grad norm", [_num(_finite(np.median, r.grad_norms), 2) for r in runs]),
        ("max grad norm", [_num(_finite(np.max, r.grad_norms), 2) for r in runs]),
        *([("final lr", [f"{r.lrs[-1]:.3g}" if r.lrs is not None and len(r.lrs) else "-" for r in runs])]
          if config.schedule != "none" and all(r.lrs is not None for r in runs) else []),
        ("wall time", [f"{r.wall_time:.1f} s" for r in runs]),
        ("outcome", [outcome(r) for r in runs]),
    ]
    heads = [
        f"clipped (max_norm={config.max_norm:g})" if r.clip else "unclipped" for r in runs
    ]
    w0 = max(len(name) for name, _ in rows)
    ws = [max(len(h), *(len(cells[i]) for _, cells in rows)) for i, h in enumerate(heads)]
    lines = [
        "  ".join([" " * w0] + [h.rjust(w) for h, w in zip(heads, ws)]),
        "  ".join(["-" * w0] + ["-" * w for w in ws]),
    ]
    lines += ["  ".join([name.ljust(w0)] + [c.rjust(w) for c, w in zip(cells, ws)])
              for name, cells in rows]
    window = max(1, len(first.losses) // 20)
    notes = (
        f"Loss per character, in nats; final and best are means over {window} "
        f"step{'s' if window > 1 else ''}. For reference, guessing uniformly "
        f"costs ln({first.vocab_size}) = {math.log(first.vocab_size):.3f}, guessing from "
        f"the character frequencies alone {first.unigram_loss:.3f}."
    )
    lines += ["", textwrap.fill(notes, 88)]
    if sample is not None:
        lines += ["", "Sample from the clipped model (temperature 0.8):", "", sample]
    return "\n".join(lines)


def plot(config: Config, runs: list[RunResult], path: Path) -> Path:
    """Draw loss and gradient norm against step for each run and save a PNG at `path`.

    Raises ImportError when matplotlib is not installed.
    """
    # The Agg canvas directly rather than pyplot: no GUI backend, no global state.
    from matplotlib.backends.backend_agg import FigureCanvasAgg  # pyright: ignore[reportMissingImports]
    from matplotlib.figure import Figure  # pyright: ignore[reportMissingImports]

    fig = Figure(figsize=(8, 6.5), layout="constrained")
    FigureCanvasAgg(fig)
    ax_loss, ax_norm = fig.subplots(2, 1, sharex=True)
    colors = {True: "tab:blue", False: "tab:red"}
    for r in runs:
        steps = np.arange(1, len(r.losses) + 1)
        name = f"clipped (max_norm={config.max_norm:g})" if r.clip else "unclipped"
        ax_loss.plot(steps, r.losses, color=colors[r.clip], lw=0.8, label=name)
        ax_norm.plot(steps, r.grad_norms, color=colors[r.clip], lw=0.8, label=name)
    first = runs[0]
    uniform = math.log(first.vocab_size)
    ax_loss.axhline(uniform, color="gray", ls="--", lw=0.8,
                    label=f"uniform guess: ln {first.vocab_size} = {uniform:.2f}")
    ax_loss.axhline(first.unigram_loss, color="gray", ls=":", lw=0.8,
                    label=f"character frequencies: {first.unigram_loss:.2f}")
    ax_norm.axhline(config.max_norm, color="tab:blue", ls="--", lw=0.8, label="max_norm")
    ax_loss.set(yscale="log", ylabel="training loss (nats/char)")
    ax_norm.set(yscale="log", ylabel=f"gradient norm (p={config.norm_type:g})", xlabel="step")
    ax_loss.legend(fontsize="small")
    ax_norm.legend(fontsize="small")
    ax_loss.set_title(
        f"{config.model.upper()}, hidden {config.hidden}, BPTT over {config.seq_len} "
        f"characters x {config.batch} streams, {config.optimizer.upper()} "
        f"lr={config.learning_rate:g}, loss {config.loss_reduction} over time",
        fontsize="medium",
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    return path
