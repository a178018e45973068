"""SparseAdam: torch's name, refused, because NumPy has no sparse gradients."""

from __future__ import annotations

from typing import Any, NoReturn

from .optimizer import Optimizer, ParamsT

__all__ = ["SparseAdam"]

_WHY = (
    "gradclip.optim.SparseAdam cannot be used: SparseAdam updates only the rows a sparse "
    "gradient touches, and NumPy arrays have no sparse gradients (torch's SparseAdam itself "
    "refuses dense ones: 'SparseAdam does not support dense gradients, please consider Adam "
    "instead'). Use gradclip.optim.Adam with dense gradient arrays, as torch advises."
)


class SparseAdam(Optimizer):
    """torch's ``SparseAdam``, which has no meaning for NumPy arrays: constructing it raises.

    Parameters
    ----------
    params : iterable
        Ignored.
    lr, betas, eps, maximize
        torch's arguments (``lr=1e-3, betas=(0.9, 0.999), eps=1e-8, maximize=False``),
        accepted so that code written for torch fails here with the explanation below
        rather than with a ``TypeError`` about its arguments.

    Raises
    ------
    NotImplementedError
        Always: NumPy has no sparse gradients, so there is nothing SparseAdam could do that
        :class:`~gradclip.optim.Adam` does not. Use ``Adam``.
    """

    def __init__(
        self,
        params: ParamsT,
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        maximize: bool = False,
    ) -> None:
        raise NotImplementedError(_WHY)

    def step(self, *args: Any, **kwargs: Any) -> NoReturn:  # pragma: no cover - unreachable
        """Unreachable: the constructor always raises."""
        raise NotImplementedError(_WHY)
