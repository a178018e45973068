"""Mirror of ``torch.nn.utils``: ``import gradclip.nn.utils as torch_utils``."""

from .._clip import (
    Arrays,
    ArraysOrParameters,
    clip_grad_norm_,
    clip_grad_value_,
    clip_grads_with_norm_,
    get_total_norm,
    parameters_to_vector,
    vector_to_parameters,
)

__all__ = [
    "Arrays",
    "ArraysOrParameters",
    "clip_grad_norm_",
    "clip_grad_value_",
    "clip_grads_with_norm_",
    "get_total_norm",
    "parameters_to_vector",
    "vector_to_parameters",
]
