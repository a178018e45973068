"""Optimizers with ``torch.optim``'s names, arguments, state and numbers.

``import gradclip.optim as optim`` then ``optim.SGD(params, lr=0.1)`` as with torch. The
parameters are :class:`gradclip.Parameter` objects (gradients in ``.grad``) or plain float
ndarrays (gradients passed as ``step(grads=[...])``). Beyond torch, every optimizer has
:meth:`Optimizer.clip_and_step`, which clips the gradients' total norm and updates in one
pass, with the same numbers as ``clip_grad_norm_`` followed by ``step``.

:mod:`gradclip.optim.lr_scheduler` and :mod:`gradclip.optim.swa_utils` are torch's
learning-rate schedulers and weight averaging, for these optimizers.
"""

from . import lr_scheduler, swa_utils
from .adadelta import Adadelta
from .adafactor import Adafactor
from .adagrad import Adagrad
from .adam import Adam
from .adamax import Adamax
from .adamw import AdamW
from .asgd import ASGD
from .lbfgs import LBFGS
from .muon import Muon
from .nadam import NAdam
from .optimizer import Optimizer, ParamsT
from .radam import RAdam
from .rmsprop import RMSprop
from .rprop import Rprop
from .sgd import SGD
from .sparse_adam import SparseAdam
from ._torch_state import state_dict_from_torch, state_dict_to_torch

__all__ = [
    "ASGD", "Adadelta", "Adafactor", "Adagrad", "Adam", "Adamax", "AdamW", "LBFGS", "Muon", "NAdam", "Optimizer", "ParamsT",
    "RAdam", "RMSprop", "Rprop", "SGD", "SparseAdam", "lr_scheduler",
    "state_dict_from_torch", "state_dict_to_torch", "swa_utils",
]
