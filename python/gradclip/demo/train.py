"""Training a character model with gradclip, the way one trains a torch model.

Each step is the torch idiom: ``optimizer.zero_grad()``, compute the gradients (here by
the model's own BPTT, instead of ``loss.backward()``) into ``p.grad``,
``clip_grad_norm_(params, max_norm, norm_type)``, ``optimizer.step()``, and, with a
learning-rate schedule, ``scheduler.step()`` (``gradclip.optim.lr_scheduler``).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .. import optim
from .._parameter import Parameter
from ..nn.utils import clip_grad_norm_, get_total_norm
from ._threads import single_threaded_blas
from .data import Corpus, windows
from .models import MODELS, CharModel, uniform_loss

__all__ = ["Config", "RunResult", "train", "evaluate", "DEFAULT_LR", "SCHEDULES", "make_scheduler"]

#: lr when none is given. SGD at 1.0 is the setting where clipping decides the outcome;
#: Adam normalises its steps itself and needs a small one.
DEFAULT_LR = {"sgd": 1.0, "adam": 2e-3}

#: The --schedule choices; "none" keeps the lr constant.
SCHEDULES = ("none", "step", "cosine", "onecycle", "plateau")


@dataclass
class Config:
    """The demo's settings; the defaults are the command line's defaults."""

    model: str = "lstm"
    hidden: int = 128
    seq_len: int = 25
    batch: int = 16
    steps: int = 500
    optimizer: str = "sgd"
    lr: float | None = None  # None: DEFAULT_LR[optimizer]
    max_norm: float = 5.0
    norm_type: float = 2.0
    loss_reduction: str = "sum"
    seed: int = 0
    schedule: str = "none"

    @property
    def learning_rate(self) -> float:
        return DEFAULT_LR[self.optimizer] if self.lr is None else self.lr


@dataclass
class RunResult:
    """The record of one training run.

    Attributes
    ----------
    losses : ndarray
        Training loss of each step, in nats per character (whatever the reduction).
    grad_norms : ndarray
        Total gradient norm of each step, before any clipping.
    clipped : ndarray of bool
        Whether clipping scaled the gradients at that step.
    nonfinite_step : int or None
        The step whose loss or gradient norm was not finite; training stopped there.
    heldout_loss : float
        Nats per character on the held-out text after training.
    unigram_loss : float
        What predicting from the training text's character frequencies alone costs:
        a model below it has learned something from the context.
    """

    clip: bool
    vocab_size: int
    unigram_loss: float
    model: CharModel
    losses: np.ndarray
    grad_norms: np.ndarray
    clipped: np.ndarray
    nonfinite_step: int | None = None
    heldout_loss: float = math.nan
    wall_time: float = 0.0
    lrs: np.ndarray | None = None  # the learning rate of each step

    @property
    def label(self) -> str:
        return "clipped" if self.clip else "unclipped"

    def smoothed(self, window: int | None = None) -> np.ndarray:
        """Running mean of the loss over `window` steps (default: a 20th of the run)."""
        w = window or max(1, len(self.losses) // 20)
        if len(self.losses) < w:
            return np.array([np.mean(self.losses)]) if len(self.losses) else np.asarray(self.losses)
        c = np.cumsum(np.concatenate([[0.0], self.losses]))
        smooth: np.ndarray = (c[w:] - c[:-w]) / w
        return smooth

    @property
    def final_loss(self) -> float:
        return float(self.smoothed()[-1]) if len(self.losses) else math.nan

    @property
    def best_loss(self) -> float:
        smoothed = self.smoothed()
        smoothed = smoothed[np.isfinite(smoothed)]  # a run stopped by a NaN ends in one
        return float(np.min(smoothed)) if len(smoothed) else math.nan

    @property
    def diverged(self) -> bool:
        """Non-finite, or worse at the end than guessing every character equally."""
        return (
            self.nonfinite_step is not None
            or not math.isfinite(self.final_loss)
            or self.final_loss > uniform_loss(self.vocab_size)
        )

    @property
    def learned(self) -> bool:
        """Better at the end than the character frequencies alone."""
        return not self.diverged and self.final_loss < self.unigram_loss


def make_optimizer(config: Config, params: list[Parameter]) -> optim.Optimizer:
    if config.optimizer == "sgd":
        return optim.SGD(params, lr=config.learning_rate)
    if config.optimizer == "adam":
        return optim.Adam(params, lr=config.learning_rate)
    raise ValueError(f"unknown optimizer {config.optimizer!r}")


#: ReduceLROnPlateau is stepped with the mean training loss of every this many steps (the
#: demo has no validation pass inside training).
PLATEAU_WINDOW = 10


def make_scheduler(config: Config, optimizer: optim.Optimizer) -> Any:
    """The learning-rate scheduler for ``config.schedule`` (None for "none").

    ``step``: StepLR halving the lr at every quarter of the run; ``cosine``:
    CosineAnnealingLR over the run; ``onecycle``: OneCycleLR peaking at the configured lr
    (momentum cycled only for Adam's beta1: plain SGD has no momentum to cycle);
    ``plateau``: ReduceLROnPlateau(factor=0.5, patience=3) on the mean training loss of
    every ``PLATEAU_WINDOW`` steps.
    """
    lrs = optim.lr_scheduler
    steps = config.steps
    if config.schedule == "none":
        return None
    if config.schedule == "step":
        return lrs.StepLR(optimizer, step_size=max(1, steps // 4), gamma=0.5)
    if config.schedule == "cosine":
        return lrs.CosineAnnealingLR(optimizer, T_max=steps)
    if config.schedule == "onecycle":
        return lrs.OneCycleLR(optimizer, max_lr=config.learning_rate, total_steps=steps,
                              cycle_momentum=config.optimizer == "adam")
    if config.schedule == "plateau":
        return lrs.ReduceLROnPlateau(optimizer, factor=0.5, patience=3)
    raise ValueError(f"unknown schedule {config.schedule!r}")


def train(
    corpus: Corpus,
    config: Config,
    *,
    clip: bool,
    progress: Callable[[int, float, float, int], None] | None = None,
) -> RunResult:
    """Train a fresh model from ``config.seed``, with or without gradient clipping.

    Parameters
    ----------
    progress : callable, optional
        Called after each step with (step, loss per character, gradient norm, number
        of steps clipped so far).
    """
    start = time.perf_counter()
    rng = np.random.default_rng(config.seed)
    model = MODELS[config.model](corpus.vocab_size, config.hidden, rng=rng)
    params = model.parameters()
    optimizer = make_optimizer(config, params)
    scheduler = make_scheduler(config, optimizer)

    lrs = np.full(config.steps, np.nan)
    losses = np.full(config.steps, np.nan)
    norms = np.full(config.steps, np.nan)
    clipped = np.zeros(config.steps, bool)
    result = RunResult(
        clip, corpus.vocab_size, corpus.unigram_loss, model, losses, norms, clipped
    )
    per_char = 1.0 / config.seq_len if config.loss_reduction == "sum" else 1.0

    batches = windows(corpus.train, config.batch, config.seq_len)
    state = model.initial_state(config.batch)
    n_clipped = 0
    # A diverging run produces huge intermediate values; its warnings would only
    # repeat what the log shows.
    with single_threaded_blas(), np.errstate(over="ignore", invalid="ignore"):
        for step in range(config.steps):
            inputs, targets, fresh = next(batches)
            if fresh:
                state = model.initial_state(config.batch)

            optimizer.zero_grad()
            loss, cache = model.forward(inputs, targets, state, config.loss_reduction)
            grads, _ = model.backward(cache)  # the state's gradient is where BPTT stops
            state = cache.state
            for p, g in zip(params, grads.values()):
                p.grad = g
            if clip:
                norm = float(clip_grad_norm_(params, config.max_norm, config.norm_type))
                # clip_grad_norm_ scales by max_norm / (norm + 1e-6) when that is < 1.
                clipped[step] = config.max_norm / (norm + 1e-6) < 1.0
                n_clipped += clipped[step]
            else:
                # Measured for the log only; these gradients go to the optimizer untouched.
                norm = float(get_total_norm(list(grads.values()), config.norm_type))

            losses[step], norms[step] = loss * per_char, norm
            if not (math.isfinite(loss) and math.isfinite(norm)):
                result.nonfinite_step = step
                break
            lrs[step] = optimizer.param_groups[0]["lr"]
            optimizer.step()
            if isinstance(scheduler, optim.lr_scheduler.ReduceLROnPlateau):
                if (step + 1) % PLATEAU_WINDOW == 0:
                    scheduler.step(float(np.mean(losses[step + 1 - PLATEAU_WINDOW : step + 1])))
            elif scheduler is not None and step + 1 < config.steps:
                scheduler.step()  # (OneCycleLR allows only total_steps - 1 more steps)
            if progress is not None:
                progress(step + 1, losses[step], norm, n_clipped)

        done = step + 1  # pyright: ignore[reportPossiblyUnboundVariable]  # steps >= 1
        result.losses, result.grad_norms = losses[:done], norms[:done]
        result.clipped = clipped[:done]
        result.lrs = lrs[:done]
        result.heldout_loss = evaluate(model, corpus.heldout, config.batch)
    result.wall_time = time.perf_counter() - start
    return result


def evaluate(model: CharModel, codes: np.ndarray, batch: int, seq_len: int = 125) -> float:
    """Mean loss per character on `codes`, in nats, carrying the state across windows.

    Long windows, since nothing is backpropagated: fewer Python-level iterations.
    """
    seq_len = min(seq_len, len(codes) // batch - 1)
    if seq_len < 1:
        return math.nan
    n = (len(codes) // batch - 1) // seq_len
    state, total = model.initial_state(batch), 0.0
    for _, (inputs, targets, _) in zip(range(n), windows(codes, batch, seq_len)):
        loss, cache = model.forward(inputs, targets, state, "mean")
        state, total = cache.state, total + loss
    return total / n
