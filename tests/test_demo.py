"""``gradclip demo``: clipping makes the difference, and the command line behaves.

The short runs here (100 steps instead of 500) keep the demo's contrast: over seeds 0-29
the clipped run ended at 2.58-2.74 nats/char (character frequencies alone: 3.32) and the
unclipped one at 17.8-559 (uniform guessing: ln 63 = 4.14).
"""

import io
import math
import subprocess
import sys

import numpy as np
import pytest

from gradclip import demo
from gradclip.__main__ import main
from gradclip.demo.report import Progress

SHORT = ["--steps", "100", "--no-plot"]


def run_cli(argv, monkeypatch):
    """Run ``main(argv)`` and return the RunResults that `demo.run` produced."""
    results = []
    real_run = demo.run

    def spy(*args, **kwargs):
        results.append(real_run(*args, **kwargs))
        return results[-1]

    monkeypatch.setattr(demo, "run", spy)
    assert main(argv) == 0
    assert len(results) == 1
    return results[0]


@pytest.mark.parametrize("seed", [0])
def test_clipping_learns_and_no_clipping_diverges(seed, tmp_path, monkeypatch, capsys):
    out = tmp_path / "out"
    clipped, unclipped = run_cli(
        ["demo", *SHORT, "--seed", str(seed), "--out", str(out)], monkeypatch
    )
    assert clipped.clip and not unclipped.clip
    V = clipped.vocab_size
    # Same weights, same first window: the runs part only once clipping acts.
    assert clipped.losses[0] == unclipped.losses[0]
    assert clipped.grad_norms[0] == unclipped.grad_norms[0]

    assert clipped.learned and not clipped.diverged
    assert clipped.final_loss < clipped.unigram_loss < math.log(V)
    assert clipped.heldout_loss < clipped.unigram_loss
    assert 0.2 < clipped.clipped.mean() < 1.0  # clipping fired, but not on every step
    assert np.all(np.isfinite(clipped.grad_norms))

    assert unclipped.diverged and not unclipped.learned
    assert unclipped.final_loss > 2 * math.log(V)
    assert unclipped.grad_norms.max() > 100 * 5.0
    assert not unclipped.clipped.any()

    stdout = capsys.readouterr().out
    assert "outcome" in stdout and "learned" in stdout and "DIVERGED" in stdout
    assert "Sample from the clipped model" in stdout
    assert not out.exists()  # --no-plot: no figure, not even the directory


def test_mean_reduction_never_clips(monkeypatch, capsys):
    # Averaging over time divides the gradient by seq_len: nothing left to clip.
    clipped, unclipped = run_cli(
        ["demo", "--steps", "20", "--no-plot", "--loss-reduction", "mean"], monkeypatch
    )
    assert not clipped.clipped.any()
    assert clipped.grad_norms.max() < 5.0
    np.testing.assert_array_equal(clipped.losses, unclipped.losses)


@pytest.mark.parametrize(
    "extra", [["--model", "rnn"], ["--optimizer", "adam"], ["--norm-type", "inf"]]
)
def test_other_settings_run(extra, monkeypatch, capsys):
    clipped, unclipped = run_cli(
        ["demo", "--steps", "5", "--hidden", "16", "--no-plot", *extra], monkeypatch
    )
    assert len(clipped.losses) == len(unclipped.losses) == 5
    assert type(clipped.model).__name__ == ("CharRNN" if "rnn" in extra else "CharLSTM")


def test_norm_type_inf_measures_max_abs(monkeypatch, capsys):
    clipped, _ = run_cli(
        ["demo", "--steps", "1", "--hidden", "8", "--norm-type", "inf", "--no-plot"],
        monkeypatch,
    )
    # Recompute step 1's gradients from the same seed and compare with the logged norm.
    from gradclip.demo.data import Corpus, load_text, windows
    from gradclip.demo.models import CharLSTM

    corpus = Corpus.from_text(load_text())
    model = CharLSTM(corpus.vocab_size, 8, rng=np.random.default_rng(0))
    inputs, targets, _ = next(windows(corpus.train, 16, 25))
    _, cache = model.forward(inputs, targets, model.initial_state(16))
    grads, _ = model.backward(cache)
    expected = max(np.abs(g).max() for g in grads.values())
    assert clipped.grad_norms[0] == pytest.approx(expected, rel=1e-6)


def test_a_non_finite_run_stops_and_says_so(monkeypatch, capsys):
    # lr=1e38 puts weights near float32's limit after one step: the logits overflow.
    runs = run_cli(["demo", "--steps", "5", "--hidden", "16", "--lr", "1e38", "--no-plot"],
                   monkeypatch)
    for r in runs:
        assert r.nonfinite_step is not None and r.diverged and not r.learned
        assert len(r.losses) == r.nonfinite_step + 1 < 5
        assert not math.isfinite(r.losses[-1]) or not math.isfinite(r.grad_norms[-1])
    captured = capsys.readouterr()
    assert "not finite at step" in captured.err
    assert "DIVERGED (non-finite at step" in captured.out
    assert "Sample from" not in captured.out  # nothing sensible to sample from


def test_plot_is_written(tmp_path, monkeypatch, capsys):
    pytest.importorskip("matplotlib")
    out = tmp_path / "figs"
    run_cli(["demo", "--steps", "3", "--hidden", "8", "--out", str(out)], monkeypatch)
    png = out / demo.FIGURE_NAME
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(png) in capsys.readouterr().out


def test_missing_matplotlib_is_one_line(tmp_path, monkeypatch, capsys):
    # None in sys.modules makes an import fail, even of a module imported before.
    for name in ("matplotlib", "matplotlib.figure", "matplotlib.backends.backend_agg"):
        monkeypatch.setitem(sys.modules, name, None)
    run_cli(["demo", "--steps", "2", "--hidden", "8", "--out", str(tmp_path / "o")],
            monkeypatch)
    lines = [ln for ln in capsys.readouterr().out.splitlines() if "matplotlib" in ln]
    assert len(lines) == 1 and "not installed" in lines[0]
    assert not (tmp_path / "o").exists()


def test_text_option(tmp_path, monkeypatch, capsys):
    text = tmp_path / "abc.txt"
    text.write_text("the cat sat on the mat. " * 400, encoding="utf-8")
    clipped, _ = run_cli(
        ["demo", "--steps", "3", "--hidden", "8", "--no-plot", "--text", str(text)],
        monkeypatch,
    )
    assert clipped.vocab_size == len(set("the cat sat on the mat. "))
    assert str(text) in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--steps", "0"], "--steps"),
        (["--steps", "-3"], "--steps"),
        (["--steps", "ten"], "--steps"),
        (["--seq-len", "2.5"], "--seq-len"),
        (["--hidden", "0"], "--hidden"),
        (["--batch", "0"], "--batch"),
        (["--lr", "0"], "--lr"),
        (["--lr", "nan"], "--lr"),
        (["--lr", "inf"], "--lr"),
        (["--max-norm", "-1"], "--max-norm"),
        (["--norm-type", "0"], "--norm-type"),
        (["--norm-type", "nan"], "--norm-type"),
        (["--model", "gru"], "--model"),
        (["--optimizer", "rmsprop"], "--optimizer"),
        (["--loss-reduction", "max"], "--loss-reduction"),
        (["--seed", "x"], "--seed"),
        (["--text", "/no/such/file.txt"], "no such file"),
        (["--bogus"], "unrecognized"),
    ],
)
def test_bad_options_are_argparse_errors(argv, message, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["demo", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


def test_unusable_text_files_are_argparse_errors(tmp_path, capsys):
    short = tmp_path / "short.txt"
    short.write_text("too short", encoding="utf-8")
    binary = tmp_path / "latin1.txt"
    binary.write_bytes("caf\xe9 ".encode("latin-1") * 1000)
    for path, message in [(short, "too few"), (binary, "UTF-8")]:
        with pytest.raises(SystemExit) as exc:
            main(["demo", "--text", str(path), "--no-plot"])
        assert exc.value.code == 2
        err = capsys.readouterr().err
        assert "--text" in err and message in err


def test_a_command_is_required(capsys):
    with pytest.raises(SystemExit) as exc:
        main([])
    assert exc.value.code == 2


def test_python_dash_m_entry_point():
    done = subprocess.run(
        [sys.executable, "-m", "gradclip", "demo", "--help"],
        capture_output=True, text=True, timeout=60,
    )
    assert done.returncode == 0
    assert "--max-norm" in done.stdout and "--loss-reduction" in done.stdout


class _Terminal(io.StringIO):
    def isatty(self):
        return True


def _fake_result(steps):
    from gradclip.demo.train import RunResult

    return RunResult(True, 3, 1.0, None, np.ones(steps), np.ones(steps), np.zeros(steps, bool))


def test_progress_redraws_one_line_on_a_terminal():
    stream = _Terminal()
    bar = Progress("clipped", 50, stream, interval=0.0)
    for step in range(1, 51):
        bar(step, 2.0, 3.0, step // 2)
    bar.close(_fake_result(50))
    text = stream.getvalue()
    assert text.count("\r") == 50 and text.count("\n") == 1
    assert "50/50" in text and "clipped  50%" in text


def test_progress_prints_plain_lines_to_a_pipe():
    stream = io.StringIO()
    bar = Progress("unclipped", 50, stream, clipping=False)
    for step in range(1, 51):
        bar(step, 2.0, 3.0, 0)
    bar.close(_fake_result(50))
    lines = stream.getvalue().splitlines()
    assert "\r" not in stream.getvalue()
    assert len(lines) == 10 and lines[-1].startswith("unclipped") and "50/50" in lines[-1]
    assert "clipped " not in lines[-1].split(maxsplit=1)[1]  # no clip rate without clipping


@pytest.mark.parametrize("schedule", ["none", "step", "cosine", "onecycle", "plateau"])
def test_schedule_option(schedule, monkeypatch, capsys):
    steps = 40
    argv = ["demo", "--steps", str(steps), "--hidden", "8", "--no-plot"]
    if schedule != "none":
        argv += ["--schedule", schedule]
    clipped, unclipped = run_cli(argv, monkeypatch)
    lrs = clipped.lrs
    assert len(lrs) == steps
    t = np.arange(steps)
    if schedule == "none":
        assert np.all(lrs == 1.0)
        assert "final lr" not in capsys.readouterr().out
        return
    if schedule == "step":  # halved every quarter
        np.testing.assert_allclose(lrs, 0.5 ** (t // 10), rtol=1e-12)
    elif schedule == "cosine":
        np.testing.assert_allclose(lrs, (1 + np.cos(np.pi * t / steps)) / 2, rtol=1e-9, atol=1e-12)
    elif schedule == "onecycle":  # 1/25 up to 1 over 30% of the run, then down to 1/25e4
        assert lrs[0] == pytest.approx(1 / 25) and lrs[-1] == pytest.approx(1 / 25 / 1e4)
        assert int(np.argmax(lrs)) == 11 and lrs.max() == pytest.approx(1.0)
        assert clipped.model is not None
    elif schedule == "plateau":  # halvings only, at multiples of the window
        assert lrs[0] == 1.0 and np.all(np.diff(lrs) <= 0)
        assert set(np.log2(lrs)) <= set(-np.arange(10.0))
    assert "final lr" in capsys.readouterr().out
    if schedule != "plateau":  # the schedule does not depend on the run
        np.testing.assert_array_equal(lrs, unclipped.lrs)


def _cli(*argv, **kwargs):
    return subprocess.run([sys.executable, "-m", "gradclip", *argv], capture_output=True,
                          text=True, timeout=120, **kwargs)


def test_version():
    import gradclip

    done = _cli("--version")
    assert done.returncode == 0 and done.stdout.strip() == f"gradclip {gradclip.__version__}"


def _unwritable_out(tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    return blocker / "figures"  # as root nothing is unwritable by permissions; this always is


@pytest.mark.parametrize("case", ["empty text", "directory text", "blank text", "unwritable out",
                                  "bad option", "missing text"])
def test_argument_errors_are_one_line_exit_2_before_training(case, tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("")
    blank = tmp_path / "blank.txt"
    blank.write_text(" \n\n ")
    argv, message = {
        "empty text": (["--text", str(empty)], "is empty"),
        "blank text": (["--text", str(blank)], "is empty"),
        "directory text": (["--text", str(tmp_path)], "is a directory"),
        "unwritable out": (["--out", str(_unwritable_out(tmp_path))], "cannot write the figure"),
        "bad option": (["--steps", "0"], "--steps"),
        "missing text": (["--text", str(tmp_path / "nope")], "no such file"),
    }[case]
    done = _cli("demo", *argv)
    assert done.returncode == 2
    assert done.stdout == ""  # nothing trained: the intro line is not even printed
    lines = done.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("gradclip demo: error: argument")
    assert message in lines[0] and "Traceback" not in done.stderr


def test_no_plot_skips_the_out_check(tmp_path, monkeypatch, capsys):
    run_cli(["demo", "--steps", "2", "--hidden", "8", "--no-plot",
             "--out", str(_unwritable_out(tmp_path))], monkeypatch)


def test_ctrl_c_exits_cleanly():
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "gradclip", "demo", "--no-plot", "--steps", "100000"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().startswith("Training")  # inside the run now
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130
    assert "Traceback" not in err and err.rstrip().splitlines()[-1] == "gradclip: interrupted"
