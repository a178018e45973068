"""Optimizer state dicts between gradclip and torch: ``torch.save``/``torch.load`` both ways.

gradclip's ``state_dict()`` has torch's layout (the same keys, groups and per-parameter
entries), with ndarrays where torch has tensors. ``torch.load(weights_only=True)`` accepts
tensors but not ndarrays, so saving for torch converts them; torch is imported only by
:func:`state_dict_to_torch`, which the caller asks for.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any

import numpy as np

__all__ = ["state_dict_from_torch", "state_dict_to_torch"]


def state_dict_to_torch(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Convert a gradclip optimizer's state dict into the one torch's optimizer would have.

    Parameters
    ----------
    state_dict : dict
        From :meth:`Optimizer.state_dict`.

    Returns
    -------
    dict
        The same structure with every ndarray replaced by a CPU ``torch.Tensor`` copy of the
        same dtype and shape (Adam's ``step`` stays a 0-d float32 tensor, as torch keeps it)
        and NumPy scalars by Python numbers: ready for ``torch.save`` and
        ``torch.load(..., weights_only=True)``, then ``torch_optimizer.load_state_dict``.

    Examples
    --------
    >>> import io, numpy as np, torch, gradclip
    >>> p = gradclip.Parameter(np.zeros(2, np.float32)); p.grad = np.ones(2, np.float32)
    >>> opt = gradclip.optim.SGD([p], lr=0.1, momentum=0.9); opt.step()
    >>> buffer = io.BytesIO()
    >>> torch.save(gradclip.optim.state_dict_to_torch(opt.state_dict()), buffer)
    >>> _ = buffer.seek(0)
    >>> t = torch.nn.Parameter(torch.from_numpy(p.data.copy()))
    >>> torch_opt = torch.optim.SGD([t], lr=0.1, momentum=0.9)
    >>> torch_opt.load_state_dict(torch.load(buffer, weights_only=True))
    >>> torch_opt.state[t]["momentum_buffer"]
    tensor([1., 1.])
    """
    # Asked for by the caller; imported by name so that type checkers do not need torch.
    torch: Any = importlib.import_module("torch")

    def convert(value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return torch.from_numpy(np.array(value, copy=True, order="C"))
        if isinstance(value, np.generic):
            return value.item()
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(convert(v) for v in value)
        return value

    result: dict[str, Any] = convert(state_dict)
    return result


def state_dict_from_torch(state_dict: dict[str, Any]) -> dict[str, Any]:
    """Convert a torch optimizer's state dict into gradclip's (tensors become ndarrays).

    Parameters
    ----------
    state_dict : dict
        From ``torch_optimizer.state_dict()`` or ``torch.load``; its tensors must be on the
        CPU (``torch.load(..., map_location="cpu")``).

    Returns
    -------
    dict
        The same structure with every tensor replaced by an ndarray copy, for
        :meth:`Optimizer.load_state_dict` (which also accepts torch's dict directly) or for
        saving without torch (``pickle``, ``np.savez``).
    """
    torch = sys.modules.get("torch")  # a torch state dict means the caller imported torch
    tensor_type = getattr(torch, "Tensor", ())

    def convert(value: Any) -> Any:
        if isinstance(value, tensor_type):
            if value.device.type != "cpu":
                raise ValueError(
                    f"state_dict_from_torch needs CPU tensors, got one on {value.device}; "
                    "load with torch.load(..., map_location='cpu')"
                )
            return value.detach().numpy().copy()
        if isinstance(value, dict):
            return {k: convert(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return type(value)(convert(v) for v in value)
        return value

    result: dict[str, Any] = convert(state_dict)
    return result
