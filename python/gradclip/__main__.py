"""The ``gradclip`` command (``python -m gradclip``).

``gradclip demo`` trains a character-level LSTM twice, with and without gradient-norm
clipping, and shows the difference. See ``gradclip demo --help``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import NoReturn

__all__ = ["main", "build_parser"]

DEMO_DESCRIPTION = """\
Show what gradient-norm clipping does. A character-level language model written in
NumPy (an LSTM by default) is trained twice from the same seed by truncated
backpropagation through time with SGD at lr=1.0: once with
gradclip.nn.utils.clip_grad_norm_(params, max_norm=5) before each optimizer.step(),
once without. The loss is summed over the time steps of each window, so gradients grow
with the window length and now and then explode; unclipped, one such step throws the
weights far away and the loss ends far above ln(vocabulary size). Clipped, the model
learns. The defaults take 15-45 seconds on two cores, depending on what else runs.

Other settings, to see why:
  --loss-reduction mean  averages the loss over time too: the gradient is seq-len times
                         smaller, clipping never fires and the two runs are identical.
  --model rnn            a vanilla tanh RNN, not the default: at lr=1.0 it fails with
                         and without clipping. With --lr 0.1 clipping rescues it, but
                         it then clips every step.
  --optimizer adam       Adam rescales its steps itself: both runs learn.
  --schedule NAME        a learning-rate schedule from gradclip.optim.lr_scheduler:
                         step (StepLR, halving every quarter), cosine (CosineAnnealingLR),
                         onecycle (OneCycleLR up to --lr and down), plateau
                         (ReduceLROnPlateau on the training loss); none keeps it constant.
"""


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive number, got {text!r}") from None
    if not (math.isfinite(value) and value > 0):
        raise argparse.ArgumentTypeError(f"expected a positive finite number, got {text}")
    return value


def _norm_type(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a positive number or 'inf', got {text!r}"
        ) from None
    if not value > 0:  # also rejects nan
        raise argparse.ArgumentTypeError(f"expected a positive number or 'inf', got {text}")
    return value


def _existing_file(text: str) -> Path:
    path = Path(text)
    if path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is a directory, not a text file")
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"no such file: {text!r}")
    return path


def _unwritable_reason(out: Path) -> str | None:
    """Why the figure could not be written under ``out`` (None if it can), creating nothing."""
    path = out.absolute()
    while not path.exists():  # the directories that would be created
        if path.parent == path:
            break
        path = path.parent
    if not path.is_dir():
        return f"{str(path)!r} exists and is not a directory"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{str(path)!r} is not writable"
    return None


class _Parser(argparse.ArgumentParser):
    """argparse, with errors on one line: ``gradclip demo: error: ... (see --help)``."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser: ``gradclip demo [options]``."""
    from . import __version__
    from .demo.train import DEFAULT_LR, SCHEDULES, Config

    d = Config()
    parser = _Parser(
        prog="gradclip",
        description="gradclip: PyTorch's gradient clipping and optimizers for NumPy arrays.",
    )
    parser.add_argument("--version", action="version", version=f"gradclip {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    demo = commands.add_parser(
        "demo",
        help="train an LSTM with and without gradient clipping and compare",
        description=DEMO_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add = demo.add_argument
    add("--steps", type=_positive_int, default=d.steps, help="SGD steps per run (%(default)s)")
    add("--seq-len", type=_positive_int, default=d.seq_len,
        help="BPTT window, in characters (%(default)s)")
    add("--hidden", type=_positive_int, default=d.hidden, help="hidden units (%(default)s)")
    add("--batch", type=_positive_int, default=d.batch,
        help="parallel text streams per step (%(default)s)")
    add("--lr", type=_positive_float, default=None,
        help=f"learning rate (default {DEFAULT_LR['sgd']:g} for sgd, "
             f"{DEFAULT_LR['adam']:g} for adam)")
    add("--max-norm", type=_positive_float, default=d.max_norm,
        help="clip_grad_norm_'s max_norm in the clipped run (%(default)s)")
    add("--norm-type", type=_norm_type, default=d.norm_type,
        help="clip_grad_norm_'s norm_type: a positive p or 'inf' (%(default)s)")
    add("--seed", type=int, default=d.seed, help="seed of the weights, shared by both runs "
        "(%(default)s)")
    add("--model", choices=["lstm", "rnn"], default=d.model,
        help="lstm (default) or rnn, a vanilla tanh RNN (see above)")
    add("--optimizer", choices=["sgd", "adam"], default=d.optimizer, help="(%(default)s)")
    add("--schedule", choices=list(SCHEDULES), default=d.schedule,
        help="learning-rate schedule for both runs (%(default)s: constant)")
    add("--loss-reduction", choices=["sum", "mean"], default=d.loss_reduction,
        help="sum (default) or mean the per-character losses over time; "
             "both average over the streams")
    add("--text", type=_existing_file, default=None, metavar="FILE",
        help="UTF-8 text to train on instead of the bundled Shakespeare excerpt")
    add("--out", type=Path, default=Path("gradclip-demo"), metavar="DIR",
        help="directory for the figure (%(default)s)")
    add("--no-plot", action="store_true", help="do not write the figure")
    # Errors found after parsing (an unreadable --text) are reported by this subparser.
    demo.set_defaults(run=_demo, command_parser=demo)
    return parser


def _demo(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    from . import demo
    from .demo.data import Corpus, load_text
    from .demo.train import Config

    config = Config(
        model=args.model, hidden=args.hidden, seq_len=args.seq_len, batch=args.batch,
        steps=args.steps, optimizer=args.optimizer, lr=args.lr, max_norm=args.max_norm,
        norm_type=args.norm_type, loss_reduction=args.loss_reduction, seed=args.seed,
        schedule=args.schedule,
    )
    try:
        text = load_text(args.text)
    except (OSError, UnicodeDecodeError) as exc:
        parser.error(f"argument --text: cannot read {str(args.text)!r} as UTF-8 text: {exc}")
    if not text.strip():
        parser.error(f"argument --text: {str(args.text)!r} is empty")
    if not args.no_plot:
        reason = _unwritable_reason(args.out)
        if reason is not None:
            parser.error(f"argument --out: cannot write the figure under {str(args.out)!r}: "
                         f"{reason} (or pass --no-plot)")
    corpus = Corpus.from_text(text)
    per_stream = len(corpus.train) // config.batch
    if per_stream < config.seq_len + 1:
        parser.error(
            f"argument --text: {len(corpus.train):,} training characters are too few for "
            f"{config.batch} streams of {config.seq_len + 1}; give a longer text or "
            f"smaller --batch/--seq-len"
        )
    try:
        demo.run(
            config, corpus, out=args.out, make_plot=not args.no_plot,
            text_name=str(args.text) if args.text else "the bundled Shakespeare",
        )
    except OSError as exc:  # the figure, after training: the run's results were printed
        parser.exit(2, f"{parser.prog}: error: cannot write the figure: {exc}\n")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Run the ``gradclip`` command line; return the exit status.

    Errors in the arguments print one line and exit with status 2 (``SystemExit``); Ctrl-C
    prints one line and returns 130, the shell's code for SIGINT.
    """
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        status: int = args.run(args, args.command_parser)
    except KeyboardInterrupt:
        print("\ngradclip: interrupted", file=sys.stderr)
        return 130
    return status


if __name__ == "__main__":
    sys.exit(main())
