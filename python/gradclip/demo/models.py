"""Character-level recurrent language models with backpropagation through time, in NumPy.

Both models read a window of ``T`` characters for each of ``B`` parallel streams, predict
the next character at every position, and return the gradient of the cross-entropy loss
with respect to every weight *and* to the state carried in from the previous window (the
gradcheck tests need the latter; training discards it, which is what makes the BPTT
"truncated").

Arrays are time-major: inputs and targets are ``(T, B)`` integer arrays, hidden states
``(B, H)``. Everything that does not depend on the recurrence -- the input projection,
the output layer, the softmax and the weight gradients -- is done for all ``T * B``
positions in one matmul; only the recurrence itself steps through time.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .._parameter import Parameter

__all__ = ["CharModel", "CharRNN", "CharLSTM", "MODELS", "Cache", "uniform_loss"]


@dataclass
class Cache:
    """What `forward` keeps for `backward`: the activations of one window."""

    inputs: np.ndarray
    targets: np.ndarray
    scale: float
    hs: np.ndarray  # (T + 1, B, H): hs[0] is the carried-in hidden state
    probs: np.ndarray | None  # (T * B, V) softmax output; None once backward used it
    state: tuple[np.ndarray, ...]  # final state, to carry into the next window
    extra: dict[str, np.ndarray] = field(default_factory=dict)


def _sigmoid_(x: np.ndarray) -> np.ndarray:
    # Via tanh: 1 / (1 + exp(-x)) overflows (and warns) once a diverging run's
    # pre-activations reach a few hundred; tanh saturates quietly.
    np.multiply(x, 0.5, out=x)
    np.tanh(x, out=x)
    np.multiply(x, 0.5, out=x)
    np.add(x, 0.5, out=x)
    return x


class CharModel:
    """Embedding, output layer and loss shared by the recurrent cells.

    Subclasses define the cell: ``_gates`` (how many ``H``-wide blocks the input and
    recurrent weights produce), ``initial_state``, ``_recur`` and ``_recur_backward``.
    """

    _gates = 1
    state_names: tuple[str, ...] = ("h",)

    def __init__(
        self,
        vocab_size: int,
        hidden_size: int,
        *,
        rng: np.random.Generator,
        dtype: np.dtype | type = np.float32,
        init_std: float = 0.1,
    ) -> None:
        V, H, G = vocab_size, hidden_size, self._gates * hidden_size
        self.vocab_size, self.hidden_size, self.dtype = V, H, np.dtype(dtype)

        def normal(*shape: int) -> Parameter:
            return Parameter((init_std * rng.standard_normal(shape)).astype(self.dtype))

        def zeros(*shape: int) -> Parameter:
            return Parameter(np.zeros(shape, self.dtype))

        # Order matters only for reproducibility: it fixes which draws each weight gets.
        self.params: dict[str, Parameter] = {
            "W_xh": normal(V, G),  # row c is the input projection of character c
            "W_hh": normal(H, G),
            "b_h": zeros(G),
            "W_hy": normal(H, V),
            "b_y": zeros(V),
        }

    def parameters(self) -> list[Parameter]:
        """The trainable parameters, in a fixed order."""
        return list(self.params.values())

    def initial_state(self, batch: int) -> tuple[np.ndarray, ...]:
        """An all-zero state for `batch` streams."""
        return tuple(np.zeros((batch, self.hidden_size), self.dtype) for _ in self.state_names)

    # -- forward ---------------------------------------------------------------------------

    def forward(
        self,
        inputs: np.ndarray,
        targets: np.ndarray,
        state: tuple[np.ndarray, ...],
        reduction: str = "sum",
    ) -> tuple[float, Cache]:
        """Run one window and return its loss.

        Parameters
        ----------
        inputs, targets : ndarray of int, shape (T, B)
            Character indices; ``targets[t]`` is the character after ``inputs[t]``.
        state : tuple of ndarray, each (B, H)
            The state carried in from the previous window (or `initial_state`).
        reduction : {"sum", "mean"}
            ``"sum"`` adds the per-character losses over the ``T`` time steps and averages
            over the ``B`` streams, so the gradient grows with the window length -- the
            setting in which clipping matters. ``"mean"`` also averages over time.

        Returns
        -------
        loss : float
            The reduced cross-entropy in nats (per window for ``"sum"``, per character
            for ``"mean"``).
        cache : Cache
            Activations for `backward`; ``cache.state`` is the final state.
        """
        T, B = inputs.shape
        if reduction not in ("sum", "mean"):
            raise ValueError(f"reduction must be 'sum' or 'mean', got {reduction!r}")
        scale = 1.0 / B if reduction == "sum" else 1.0 / (B * T)
        p = self.params
        # Indexing a row of W_xh is the matmul with a one-hot input, without the zeros.
        xw = p["W_xh"].data[inputs]
        xw += p["b_h"].data
        hs, extra, final = self._recur(xw, state)

        logits = hs[1:].reshape(T * B, -1) @ p["W_hy"].data
        logits += p["b_y"].data
        # Log-softmax with the max subtracted: a diverged run has logits in the thousands.
        logits -= logits.max(axis=1, keepdims=True)
        target_logits = logits[np.arange(T * B), targets.reshape(-1)]  # a copy
        probs = np.exp(logits, out=logits)
        sums = probs.sum(axis=1, keepdims=True)
        log_likelihood = target_logits - np.log(sums[:, 0])
        probs /= sums
        loss = -float(log_likelihood.sum(dtype=np.float64)) * scale
        cache = Cache(inputs, targets, scale, hs, probs, final, extra)
        return loss, cache

    # -- backward --------------------------------------------------------------------------

    def backward(self, cache: Cache) -> tuple[dict[str, np.ndarray], tuple[np.ndarray, ...]]:
        """Backpropagate the loss of `forward` through the window.

        Returns
        -------
        grads : dict of str to ndarray
            The gradient of the loss for each entry of `params`, same shapes and dtype.
        dstate : tuple of ndarray
            The gradient with respect to the carried-in state.
        """
        T, B = cache.inputs.shape
        H, p = self.hidden_size, self.params
        # d loss / d logits = softmax - onehot(target), scaled like the loss.
        if cache.probs is None:
            raise RuntimeError("backward was already called on this cache")
        dlogits, cache.probs = cache.probs, None  # reused in place, so the cache is spent
        dlogits[np.arange(T * B), cache.targets.reshape(-1)] -= 1.0
        dlogits *= cache.scale
        h_out = cache.hs[1:].reshape(T * B, H)
        grads = {
            "W_hy": h_out.T @ dlogits,
            "b_y": dlogits.sum(axis=0),
        }
        dh_out = (dlogits @ p["W_hy"].data.T).reshape(T, B, H)

        dz, dstate = self._recur_backward(dh_out, cache)
        dz_flat = dz.reshape(T * B, -1)
        grads["W_hh"] = cache.hs[:-1].reshape(T * B, H).T @ dz_flat
        grads["b_h"] = dz_flat.sum(axis=0)
        # Scatter-add into the rows that were read; a one-hot matmul does it in one BLAS call.
        onehot = np.zeros((T * B, self.vocab_size), self.dtype)
        onehot[np.arange(T * B), cache.inputs.reshape(-1)] = 1.0
        grads["W_xh"] = onehot.T @ dz_flat
        return {name: grads[name] for name in p}, dstate

    # -- generation ------------------------------------------------------------------------

    def sample(
        self,
        start: int,
        length: int,
        rng: np.random.Generator,
        temperature: float = 1.0,
    ) -> list[int]:
        """Generate `length` character indices, starting from character `start`."""
        p = self.params
        W_xh, b_h = p["W_xh"].data, p["b_h"].data
        W_hy, b_y = p["W_hy"].data.astype(np.float64), p["b_y"].data.astype(np.float64)
        state = self.initial_state(1)
        out, char = [], start
        for _ in range(length):
            xw = (W_xh[char] + b_h)[None, None]
            hs, _, state = self._recur(xw, state)
            logits = (hs[1, 0].astype(np.float64) @ W_hy + b_y) / temperature
            probs = np.exp(logits - logits.max())
            char = int(rng.choice(self.vocab_size, p=probs / probs.sum()))
            out.append(char)
        return out

    # -- the cell --------------------------------------------------------------------------

    def _recur(
        self, xw: np.ndarray, state: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, dict[str, np.ndarray], tuple[np.ndarray, ...]]:
        raise NotImplementedError

    def _recur_backward(
        self, dh_out: np.ndarray, cache: Cache
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        raise NotImplementedError


class CharRNN(CharModel):
    """Vanilla (Elman) RNN: ``h_t = tanh(x_t W_xh + h_{t-1} W_hh + b_h)``.

    Kept for comparison. Its gradients explode *and* vanish; with the loss summed over
    time no setting tried trains it at lr=1.0 with or without clipping, so the demo's
    default is the LSTM.
    """

    _gates = 1
    state_names = ("h",)

    def _recur(
        self, xw: np.ndarray, state: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, dict[str, np.ndarray], tuple[np.ndarray, ...]]:
        T, B, H = xw.shape
        W_hh = self.params["W_hh"].data
        hs = np.empty((T + 1, B, H), self.dtype)
        hs[0] = state[0]
        for t in range(T):
            h = np.matmul(hs[t], W_hh, out=hs[t + 1])
            h += xw[t]
            np.tanh(h, out=h)
        return hs, {}, (hs[T].copy(),)

    def _recur_backward(
        self, dh_out: np.ndarray, cache: Cache
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        T, B, H = dh_out.shape
        W_hh_T = self.params["W_hh"].data.T
        hs = cache.hs
        dz = np.empty_like(dh_out)
        dh_next = np.zeros((B, H), self.dtype)
        for t in range(T - 1, -1, -1):
            d = np.add(dh_out[t], dh_next, out=dz[t])
            d *= 1.0 - hs[t + 1] * hs[t + 1]  # tanh' = 1 - tanh^2
            dh_next = d @ W_hh_T
        return dz, (dh_next,)


class CharLSTM(CharModel):
    """LSTM without peepholes, gates ordered input, forget, output, candidate.

    ``c_t = f * c_{t-1} + i * g``, ``h_t = o * tanh(c_t)``. The additive cell path keeps
    the states bounded even when the weights blow up, so an unclipped run diverges to huge
    but finite losses rather than NaN.
    """

    _gates = 4
    state_names = ("h", "c")

    def _recur(
        self, xw: np.ndarray, state: tuple[np.ndarray, ...]
    ) -> tuple[np.ndarray, dict[str, np.ndarray], tuple[np.ndarray, ...]]:
        T, B, G = xw.shape
        H = G // 4
        W_hh = self.params["W_hh"].data
        hs = np.empty((T + 1, B, H), self.dtype)
        cs = np.empty((T + 1, B, H), self.dtype)
        gates = np.empty((T, B, G), self.dtype)  # activated: i, f, o, g
        tanh_c = np.empty((T, B, H), self.dtype)
        hs[0], cs[0] = state
        for t in range(T):
            z = np.matmul(hs[t], W_hh, out=gates[t])
            z += xw[t]
            _sigmoid_(z[:, : 3 * H])
            np.tanh(z[:, 3 * H :], out=z[:, 3 * H :])
            i, f, o, g = z[:, :H], z[:, H : 2 * H], z[:, 2 * H : 3 * H], z[:, 3 * H :]
            c = np.multiply(f, cs[t], out=cs[t + 1])
            c += i * g
            np.tanh(c, out=tanh_c[t])
            np.multiply(o, tanh_c[t], out=hs[t + 1])
        extra = {"cs": cs, "gates": gates, "tanh_c": tanh_c}
        return hs, extra, (hs[T].copy(), cs[T].copy())

    def _recur_backward(
        self, dh_out: np.ndarray, cache: Cache
    ) -> tuple[np.ndarray, tuple[np.ndarray, ...]]:
        T, B, H = dh_out.shape
        W_hh_T = self.params["W_hh"].data.T
        cs, gates, tanh_c = cache.extra["cs"], cache.extra["gates"], cache.extra["tanh_c"]
        dz = np.empty((T, B, 4 * H), self.dtype)
        dh_next = np.zeros((B, H), self.dtype)
        dc_next = np.zeros((B, H), self.dtype)
        for t in range(T - 1, -1, -1):
            a = gates[t]
            i, f, o, g = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
            dh = dh_out[t] + dh_next
            dc = dh * o
            dc *= 1.0 - tanh_c[t] * tanh_c[t]
            dc += dc_next
            d = dz[t]
            # Gradients with respect to the activated gates, then through their
            # nonlinearities: sigmoid' = s (1 - s) for i, f, o and tanh' = 1 - g^2 for g.
            np.multiply(dc, g, out=d[:, :H])
            np.multiply(dc, cs[t], out=d[:, H : 2 * H])
            np.multiply(dh, tanh_c[t], out=d[:, 2 * H : 3 * H])
            np.multiply(dc, i, out=d[:, 3 * H :])
            d[:, : 3 * H] *= a[:, : 3 * H] * (1.0 - a[:, : 3 * H])
            d[:, 3 * H :] *= 1.0 - g * g
            dc_next = dc * f
            dh_next = d @ W_hh_T
        return dz, (dh_next, dc_next)


MODELS: dict[str, type[CharModel]] = {"rnn": CharRNN, "lstm": CharLSTM}


def uniform_loss(vocab_size: int) -> float:
    """The loss per character, in nats, of a model that predicts every character equally."""
    return math.log(vocab_size)
