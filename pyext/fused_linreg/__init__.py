"""fused_linreg: fused C++/CUDA kernels for training linear regression with PyTorch.

The operators live in ``torch.ops.fused_linreg`` (loaded from the compiled ``_C``
library); this package adds their autograd and fake kernels and the user-facing API:

* ``linear``, ``squared_loss``, ``mse_loss``, ``sgd_``: functional API;
* ``nn``: ``Linear``, ``MSELoss``, ``SquaredLoss`` modules;
* ``optim``: ``SGD``, a drop-in ``torch.optim.SGD``;
* ``d2l``: the book's ``synthetic_data``, ``data_iter``, ``linreg``, ``squared_loss``, ``sgd``.
"""

import torch  # noqa: F401  (loads libtorch/libc10, which _C links against)

from . import _C  # type: ignore[attr-defined]  # noqa: F401  (loading the library registers torch.ops.fused_linreg.*)
from . import _ops  # noqa: F401  (fake kernels and autograd formulas of those ops)
from . import d2l, nn, optim
from .functional import linear, mse_loss, sgd_, squared_loss

__version__ = "0.1.0"

__all__ = ["linear", "squared_loss", "mse_loss", "sgd_", "nn", "optim", "d2l", "__version__"]
