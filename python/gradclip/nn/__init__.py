"""Mirror of ``torch.nn``'s parts that gradclip provides: :mod:`gradclip.nn.utils`."""

from . import utils
from .._parameter import Parameter

__all__ = ["Parameter", "utils"]
