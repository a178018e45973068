# Type stub for gradclip._C, the private C extension. Use the gradclip package instead:
# these entry points are positional, validate everything themselves, and may change.
from typing import Sequence

import numpy as np

ISA: str

def total_norm(tensors: object, norm_type: float, error_if_nonfinite: bool, /) -> np.floating: ...
def total_norm_and_coef(
    parameters: object, max_norm: float, norm_type: float, error_if_nonfinite: bool, /
) -> tuple[np.floating, float]: ...
def clip_grad_norm(
    parameters: object, max_norm: float, norm_type: float, error_if_nonfinite: bool, /
) -> np.floating: ...
def clip_grads_with_norm(parameters: object, max_norm: float, total_norm: float, single: bool, /) -> None: ...
def clip_grad_value(parameters: object, clip_value: float, /) -> None: ...
def sgd_step(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    momentum_buffers: list[np.ndarray | None],
    lr: float,
    momentum: float,
    dampening: float,
    weight_decay: float,
    nesterov: bool,
    maximize: bool,
    grad_scale: float | None,
    write_back: bool,
    /,
) -> None: ...
def adam_step(
    params: Sequence[np.ndarray],
    grads: Sequence[np.ndarray],
    exp_avgs: Sequence[np.ndarray],
    exp_avg_sqs: Sequence[np.ndarray],
    max_exp_avg_sqs: Sequence[np.ndarray],
    state_steps: Sequence[np.ndarray],
    amsgrad: bool,
    beta1: float,
    beta2: float,
    lr: float,
    weight_decay: float,
    eps: float,
    maximize: bool,
    decoupled_weight_decay: bool,
    grad_scale: float | None,
    write_back: bool,
    /,
) -> None: ...
def set_num_threads(n: int, /) -> None: ...
def get_num_threads() -> int: ...
