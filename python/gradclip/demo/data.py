"""The demo's text: loading, the character vocabulary and truncated-BPTT batches."""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Iterator

import numpy as np

__all__ = [
    "Corpus", "load_text", "streams", "windows", "BUNDLED_TEXT", "TRAIN_CHARS", "HELDOUT_CHARS"
]

#: The package's own text: the first ~400,000 characters of "tiny shakespeare".
BUNDLED_TEXT = "tinyshakespeare.txt"
#: At most this many characters train the model ...
TRAIN_CHARS = 300_000
#: ... and at most this many of the following ones measure it on text it has not seen.
HELDOUT_CHARS = 20_000


def load_text(path: str | Path | None = None) -> str:
    """Read `path` as UTF-8, or the bundled Shakespeare excerpt when `path` is None."""
    if path is None:
        return (resources.files("gradclip") / "data" / BUNDLED_TEXT).read_text("utf-8")
    return Path(path).read_text(encoding="utf-8")


@dataclass
class Corpus:
    """A text split into training and held-out parts and encoded as character indices.

    The training part is the first ``min(TRAIN_CHARS, 75%)`` of the text, the held-out
    part at most ``HELDOUT_CHARS`` of what follows, so a longer text only costs reading.

    Attributes
    ----------
    chars : str
        The vocabulary, sorted; index ``k`` is character ``chars[k]``.
    train, heldout : ndarray of int64
        The encoded parts.
    """

    chars: str
    train: np.ndarray
    heldout: np.ndarray

    @classmethod
    def from_text(cls, text: str) -> "Corpus":
        n_train = min(TRAIN_CHARS, (3 * len(text)) // 4)
        # The vocabulary covers the held-out part too, so every character there has a row.
        used = text[: n_train + HELDOUT_CHARS]
        chars = "".join(sorted(set(used)))
        lookup = np.zeros(max(map(ord, chars)) + 1, np.int64)
        lookup[[ord(c) for c in chars]] = np.arange(len(chars))
        codes = lookup[np.frombuffer(used.encode("utf-32-le"), np.uint32)]
        return cls(chars, codes[:n_train], codes[n_train:])

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    @property
    def unigram_loss(self) -> float:
        """Entropy of the training text's character frequencies, in nats per character."""
        freq = np.bincount(self.train, minlength=self.vocab_size) / len(self.train)
        freq = freq[freq > 0]
        return float(-(freq * np.log(freq)).sum())

    def decode(self, indices: list[int] | np.ndarray) -> str:
        return "".join(self.chars[i] for i in indices)


def streams(codes: np.ndarray, batch: int) -> np.ndarray:
    """Cut `codes` into `batch` contiguous streams, returned time-major: (length, batch).

    Stream ``b`` continues where it left off from one window to the next, which is what
    lets the hidden state be carried between windows.
    """
    length = len(codes) // batch
    return np.ascontiguousarray(codes[: length * batch].reshape(batch, length).T)


def windows(
    codes: np.ndarray, batch: int, seq_len: int
) -> Iterator[tuple[np.ndarray, np.ndarray, bool]]:
    """Yield ``(inputs, targets, fresh)`` windows of shape (seq_len, batch), forever.

    ``targets`` is ``inputs`` shifted by one character. ``fresh`` is True for the first
    window of each pass over the data, where the carried state should be reset: the
    streams jump back to their starts there.
    """
    s = streams(codes, batch)
    n = (len(s) - 1) // seq_len
    if n < 1:
        raise ValueError(
            f"{len(codes)} characters are too few for {batch} streams of windows of "
            f"{seq_len} characters"
        )
    while True:
        for k in range(n):
            lo = k * seq_len
            yield s[lo : lo + seq_len], s[lo + 1 : lo + seq_len + 1], k == 0
