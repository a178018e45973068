# pyright: strict
"""Ordinary user code, type-checked in CI by mypy --strict and pyright (strict), and run by
tests/test_typing.py. It must stay free of casts and ignores: what a user writes."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

import gradclip
import gradclip.nn.utils as torch_utils
from gradclip import ArraysOrParameters, Parameter
from gradclip.optim import ParamsT

p = gradclip.Parameter(np.zeros(3))
p.grad = np.ones(3)
values: np.ndarray = p.data
grad: np.ndarray | None = p.grad
shape: tuple[int, ...] = p.shape
p.data[0] = 1.0
p -= 0.1 * p.grad
y = np.tanh(p) + p[0]

W = Parameter(np.ones((2, 2), dtype=np.float32))
W.grad = np.full((2, 2), 10.0, dtype=np.float32)
params = [p, W]


def gradients(ps: list[Parameter]) -> Iterator[np.ndarray]:
    for q in ps:
        if q.grad is not None:
            yield q.grad


total: float = float(gradclip.clip_grad_norm_(params, max_norm=5.0))
total = float(torch_utils.clip_grad_norm_((p, W), 5.0, norm_type="inf"))
total = float(gradclip.get_total_norm(gradients(params)))
total = float(gradclip.get_total_norm(p.grad, 2.0, error_if_nonfinite=True))
gradclip.clip_grad_value_(iter(params), 1.0)
gradclip.clip_grads_with_norm_(params, 1.0, gradclip.get_total_norm(list(gradients(params))))
gradclip.clip_grad_norm_(np.ones(4), 1.0)

some: ArraysOrParameters = tuple(params)
gradclip.clip_grad_norm_(some, 1.0)

vec: np.ndarray = gradclip.parameters_to_vector(params)
gradclip.vector_to_parameters(vec, params)

groups: ParamsT = [{"params": [p]}, {"params": [W], "lr": 0.01}]
sgd = gradclip.optim.SGD(groups, lr=0.1, momentum=0.9)
sgd.step()
sgd.zero_grad()

a = np.ones(3)
adam = gradclip.optim.Adam((x for x in [a]), lr=1e-3, betas=(0.9, 0.99))
adam.step(grads=[np.ones(3)])
norm = adam.clip_and_step(1.0, grads=(np.ones(3),))
state = adam.state_dict()
adam.load_state_dict(state)
adamw = gradclip.optim.AdamW([("w", Parameter(np.zeros(2)))], weight_decay=0.1)
lr: float = adamw.param_groups[0]["lr"]

info: gradclip.ClipInfo = gradclip.clip_grad_norm_(params, 5.0, return_info=True)
norms: np.ndarray = gradclip.get_norms(list(gradients(params)))
clipped: bool = info.clipped or bool(norms.size == 0)
gradclip.adaptive_clip_grad_(params, clip_factor=0.01)
gradclip.adaptive_clip_grad_([a], grads=[np.ones(3)])
gradclip.AGC(0.02)(params)
auto = gradclip.AutoClip(percentile=50.0)
auto_info: gradclip.ClipInfo = auto(params)
zclip = gradclip.ZClip(warmup_steps=2)
coef: float = zclip(params).clip_coef
threshold: float | None = zclip.last_threshold
rprop = gradclip.optim.Rprop([p], etas=(0.5, 1.2))
rprop.clip_and_step(1.0, clipper=auto)

batch = np.ones((4, 3))
one_sum, example_norms = gradclip.clip_per_example_and_sum(batch, 1.0)
summed_one: np.ndarray = one_sum
list_sum, _ = gradclip.clip_per_example_and_sum([batch, batch], 1.0, noise_multiplier=0.5)
summed_list: list[np.ndarray] = list_sum

lbfgs = gradclip.optim.LBFGS([W], line_search_fn="strong_wolfe")


def closure() -> float:
    W.grad = 2 * W.data
    return float((W.data**2).sum())


loss = lbfgs.step(closure)
for optimizer in (
    gradclip.optim.Adadelta([p]), gradclip.optim.Adagrad([p]), gradclip.optim.Adamax([p]),
    gradclip.optim.ASGD([p]), gradclip.optim.NAdam([p]), gradclip.optim.RAdam([p]),
    gradclip.optim.RMSprop([p], momentum=0.9), gradclip.optim.Muon([W]),
):
    optimizer.step()

gradclip.set_num_threads(1)
threads: int = gradclip.get_num_threads()


def give_blas_its_threads_back() -> tuple[str, ...]:  # type-checked, not run (needs OpenBLAS >= 0.3.27)
    return gradclip.share_blas_threads(False)


print(f"ok {total:.3f} {float(norm):.3f} {threads}")
