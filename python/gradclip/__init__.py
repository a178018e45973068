"""gradclip: PyTorch's gradient clipping and optimizers for lists of NumPy arrays, in C.

The same names, arguments and numbers as ``torch.nn.utils`` and ``torch.optim``::

    import gradclip.optim as optim
    import gradclip.nn.utils as torch_utils

    optimizer = optim.SGD(params, lr=1.0)
    torch_utils.clip_grad_norm_(params, 5.0)
    optimizer.step()
"""

from ._clip import (
    Arrays,
    ArraysOrParameters,
    clip_grad_norm_,
    clip_grad_value_,
    clip_grads_with_norm_,
    get_total_norm,
    parameters_to_vector,
    vector_to_parameters,
)
from ._adaptive import AGC, AutoClip, ZClip, adaptive_clip_grad_
from ._clipinfo import ClipInfo, get_norms
from ._parameter import Parameter
from ._per_example import clip_per_example_and_sum
from ._threads import get_num_threads, set_num_threads, share_blas_threads
from . import _C, _interop, nn, optim

# torch tensors and other DLPack arrays as gradients: the C layer calls this for any item that
# is not an exact ndarray.
_interop.register(_C)

__version__ = "0.1.0"

__all__ = [
    "AGC",
    "Arrays",
    "ArraysOrParameters",
    "AutoClip",
    "ClipInfo",
    "Parameter",
    "ZClip",
    "adaptive_clip_grad_",
    "clip_per_example_and_sum",
    "get_norms",
    "clip_grad_norm_",
    "clip_grad_value_",
    "clip_grads_with_norm_",
    "get_num_threads",
    "get_total_norm",
    "nn",
    "optim",
    "parameters_to_vector",
    "set_num_threads",
    "share_blas_threads",
    "vector_to_parameters",
]
