"""The ``python -m gradclip demo`` command: why recurrent nets need gradient-norm clipping.

A character-level LSTM (or vanilla RNN) written in NumPy is trained twice from the same
seed by plain SGD at lr=1.0 -- once with ``gradclip.nn.utils.clip_grad_norm_`` and once
without. The loss is summed over the time steps of each window, so the gradient grows
with the window length; without clipping, occasional huge gradients throw the weights
far away and the loss never recovers.

Modules: `data` (text, vocabulary, batches), `models` (the networks and their BPTT),
`train` (the torch-style training loop) and `report` (progress, summary, figure).
"""

from __future__ import annotations

import math
import sys
import textwrap
from pathlib import Path
from typing import TextIO

import numpy as np

from .data import Corpus, load_text
from .report import Progress, plot, summary
from .train import Config, RunResult, train

__all__ = ["Config", "Corpus", "RunResult", "run", "FIGURE_NAME"]

FIGURE_NAME = "demo.png"


def run(
    config: Config,
    corpus: Corpus | None = None,
    *,
    out: str | Path = "gradclip-demo",
    make_plot: bool = True,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    text_name: str = "the bundled Shakespeare",
) -> list[RunResult]:
    """Train the clipped and the unclipped run, print the comparison, draw the figure.

    Parameters
    ----------
    config : Config
        The settings shared by both runs.
    corpus : Corpus, optional
        The text; by default the bundled Shakespeare excerpt.
    out : path
        Directory for the figure, created if needed.
    make_plot : bool
        Write ``out/demo.png`` if matplotlib is installed.
    stdout, stderr : text streams
        Where the summary, and the progress lines, go (default: the process's).
    text_name : str
        How the summary names the text.

    Returns
    -------
    list of RunResult
        The clipped run, then the unclipped one.
    """
    err: TextIO = sys.stderr if stderr is None else stderr
    stdout = stdout or sys.stdout
    corpus = corpus or Corpus.from_text(load_text())
    norm = "inf" if math.isinf(config.norm_type) else f"{config.norm_type:g}"
    intro = (
        f"Training a character-level {config.model.upper()} (hidden {config.hidden}) on "
        f"{len(corpus.train):,} characters of {text_name} ({corpus.vocab_size} distinct), "
        f"by BPTT over windows of {config.seq_len} characters in {config.batch} streams, "
        f"loss {config.loss_reduction} over time, {config.steps} steps of "
        f"{config.optimizer.upper()} lr={config.learning_rate:g}"
        f"{'' if config.schedule == 'none' else f' ({config.schedule} schedule)'}; twice from seed "
        f"{config.seed}: with clip_grad_norm_(max_norm={config.max_norm:g}, "
        f"norm_type={norm}) and without."
    )
    wrapped = textwrap.fill(intro, 88, break_long_words=False, break_on_hyphens=False)
    print(wrapped, file=stdout, flush=True)
    runs = []
    for clip in (True, False):
        label = "clipped" if clip else "unclipped"
        progress = Progress(label, config.steps, err, clipping=clip)
        result = train(corpus, config, clip=clip, progress=progress)
        progress.close(result)
        runs.append(result)

    sample = None
    if runs[0].nonfinite_step is None:
        start = corpus.chars.find("\n")
        indices = runs[0].model.sample(
            max(start, 0), 300, np.random.default_rng(config.seed), temperature=0.8
        )
        sample = corpus.decode(indices)
    print("\n" + summary(config, runs, sample), file=stdout, flush=True)

    if make_plot:
        try:
            path = plot(config, runs, Path(out) / FIGURE_NAME)
        except ImportError:
            print(
                "matplotlib is not installed, so no figure (to get one: pip install "
                "matplotlib, or pip install \".[plot]\" in gradclip's source directory).",
                file=stdout,
            )
        else:
            print(f"\nFigure: {path}", file=stdout)
    return runs
