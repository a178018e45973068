"""gradclip: PyTorch's gradient clipping and optimizers for lists of NumPy arrays, in C.

The same names, arguments and numbers as ``torch.nn.utils`` and ``torch.optim``::

    import gradclip.optim as optim
    import gradclip.nn.utils as torch_utils

    optimizer = optim.SGD(params, lr=1.0)
    torch_utils.clip_grad_norm_(params, 5.0)
    optimizer.step()
"""

from ._clip import (
    clip_grad_norm_,
    clip_grad_value_,
    clip_grads_with_norm_,
    get_total_norm,
    parameters_to_vector,
    vector_to_parameters,
)
from ._parameter import Parameter
from ._threads import get_num_threads, set_num_threads
from . import nn

__version__ = "0.1.0"

__all__ = [
    "Parameter",
    "clip_grad_norm_",
    "clip_grad_value_",
    "clip_grads_with_norm_",
    "get_num_threads",
    "get_total_norm",
    "parameters_to_vector",
    "set_num_threads",
    "vector_to_parameters",
]
