"""Train a character-level LSTM on Shakespeare with gradclip: torch's training loop, in NumPy.

The model and its backpropagation through time come from ``gradclip.demo``; the loop is
what you would write with torch, with the gradient computed by hand instead of by
``loss.backward()``::

    python examples/train_char_rnn.py --steps 1000
    python examples/train_char_rnn.py --model rnn --max-norm 1
"""

import os

# Set before NumPy loads OpenBLAS. The per-time-step matmuls are small: one thread is as
# fast on an idle machine, and several times faster when another process is busy.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

import gradclip.nn.utils as torch_utils  # noqa: E402
import gradclip.optim as optim  # noqa: E402
from gradclip.demo.data import Corpus, load_text, windows  # noqa: E402
from gradclip.demo.models import MODELS  # noqa: E402
from gradclip.demo.train import evaluate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", choices=sorted(MODELS), default="lstm")
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--lr", type=float, default=1.0)
    parser.add_argument("--max-norm", type=float, default=5.0)
    parser.add_argument("--text", default=None, help="a UTF-8 text (default: Shakespeare)")
    args = parser.parse_args()

    corpus = Corpus.from_text(load_text(args.text))
    batch, seq_len = 16, 25
    model = MODELS[args.model](corpus.vocab_size, 128, rng=np.random.default_rng(0))
    params = model.parameters()  # gradclip.Parameter objects: .data and .grad
    optimizer = optim.SGD(params, lr=args.lr)

    state = model.initial_state(batch)
    start, recent, clipped = time.perf_counter(), [], 0
    data = windows(corpus.train, batch, seq_len)
    for step in range(1, args.steps + 1):
        inputs, targets, fresh = next(data)
        if fresh:  # back at the start of the text: the carried state no longer applies
            state = model.initial_state(batch)

        optimizer.zero_grad()
        loss, cache = model.forward(inputs, targets, state)  # summed over the window
        grads, _ = model.backward(cache)  # BPTT, truncated at the window's start
        state = cache.state  # carried into the next window
        for p, g in zip(params, grads.values()):
            p.grad = g
        norm = torch_utils.clip_grad_norm_(params, max_norm=args.max_norm)
        optimizer.step()

        recent.append(loss / seq_len)
        clipped += bool(norm > args.max_norm)
        if step % 100 == 0:
            print(f"step {step:5d}  loss {np.mean(recent):.3f} nats/char  "
                  f"clipped {100 * clipped / step:.0f}% of steps  "
                  f"{time.perf_counter() - start:.1f}s")
            recent = []

    heldout = evaluate(model, corpus.heldout, batch)
    print(f"\nheld-out loss {heldout:.3f} nats/char "
          f"(character frequencies alone: {corpus.unigram_loss:.3f})\n")
    start_char = max(corpus.chars.find("\n"), 0)
    sample = model.sample(start_char, 400, np.random.default_rng(1), temperature=0.8)
    print(corpus.decode(sample))


if __name__ == "__main__":
    main()
