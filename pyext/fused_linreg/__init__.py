"""fused_linreg: fused C++/CUDA kernels for training linear regression with PyTorch.

The operators live in ``torch.ops.fused_linreg`` (loaded from the compiled ``_C``
library); this package adds their autograd and fake kernels and the user-facing API:

* ``linear``, ``squared_loss``, ``mse_loss``, ``sgd_``: functional API;
* ``linreg_step_``, ``linreg_grad``, ``linreg_epoch_``: the whole training step (and
  a whole epoch) of linear regression fused into one pass over the data;
* ``LinearRegression``: a scikit-learn-style estimator trained with those;
* ``nn``: ``Linear``, ``MSELoss``, ``SquaredLoss`` modules;
* ``optim``: ``SGD``, a drop-in ``torch.optim.SGD``;
* ``d2l``: the book's ``synthetic_data``, ``data_iter``, ``linreg``, ``squared_loss``, ``sgd``.
"""

import torch  # noqa: F401  (loads libtorch/libc10, which _C links against)

from . import _C  # type: ignore[attr-defined]  # noqa: F401  (loading the library registers torch.ops.fused_linreg.*)
from . import _ops  # noqa: F401  (fake kernels and autograd formulas of those ops)
from . import d2l, nn, optim
from .estimator import LinearRegression
from .functional import linear, mse_loss, sgd_, squared_loss
from .fused_step import linreg_epoch_, linreg_grad, linreg_step_

__version__ = "0.1.0"

__all__ = [
    "linear",
    "squared_loss",
    "mse_loss",
    "sgd_",
    "linreg_step_",
    "linreg_grad",
    "linreg_epoch_",
    "LinearRegression",
    "nn",
    "optim",
    "d2l",
    "__version__",
]
