"""fused_linreg: fused C++/CUDA kernels for training linear regression with PyTorch.

The operators live in ``torch.ops.fused_linreg`` (loaded from the compiled ``_C``
library, which also registers their autograd); this package adds their fake kernels and the
user-facing API:

* ``linear``, ``squared_loss``, ``mse_loss``, ``sgd_``: functional API;
* ``linreg_step_``, ``linreg_grad``, ``linreg_epoch_``: the whole training step (and
  a whole epoch) of linear regression fused into one pass over the data;
* ``LinearRegression``: a scikit-learn-style estimator trained with those;
* ``nn``: ``Linear``, ``MSELoss``, ``SquaredLoss`` modules;
* ``optim``: ``SGD``, a drop-in ``torch.optim.SGD``;
* ``d2l``: the book's ``synthetic_data``, ``data_iter``, ``linreg``, ``squared_loss``, ``sgd``.
"""

import importlib.util
import re

import torch  # (loads libtorch/libc10, which _C links against)


_REBUILD = ("Rebuild it against the installed torch: in the fused-linreg source tree, "
            "`pip install --no-build-isolation --force-reinstall --no-deps .` (or `make install`).")


def _load_failure(error: ImportError) -> str:
    """What to tell a user whose compiled library does not load: usually a torch other than
    the one it was built against (an "undefined symbol"), and how to rebuild it."""
    spec = importlib.util.find_spec(f"{__name__}._C")
    built = None
    if spec is not None and spec.origin is not None:
        with open(spec.origin, "rb") as library:
            found = re.search(rb"fused_linreg built with torch ([0-9]+\.[0-9]+\.[0-9]+)", library.read())
        built = found.group(1).decode() if found else None
    installed = torch.__version__.split("+")[0]
    if built is None or built == installed:
        return f"fused_linreg: its compiled library failed to load: {error}"
    return (f"fused_linreg was built against torch {built} but torch {torch.__version__} is installed, and its "
            f"compiled library does not load under it ({error}). {_REBUILD}")


def _check_torch_minor_version(built: str) -> None:
    """A library loaded under another torch minor version than it was built for may load and
    still misbehave (torch's C++ ABI is not stable across minor versions): refuse it."""
    if built.split(".")[:2] != torch.__version__.split("+")[0].split(".")[:2]:
        raise ImportError(f"fused_linreg was built against torch {built} but torch {torch.__version__} is "
                          f"installed. {_REBUILD}")


try:
    from . import _C  # type: ignore[attr-defined]  # (loading the library registers torch.ops.fused_linreg.*)
except ImportError as _error:
    raise ImportError(_load_failure(_error)) from _error
_check_torch_minor_version(_C.BUILT_WITH_TORCH)
from . import _ops  # noqa: F401  (fake kernels of those ops)
from . import d2l, nn, optim
from .estimator import LinearRegression
from .functional import linear, mse_loss, sgd_, squared_loss
from .fused_step import linreg_epoch_, linreg_grad, linreg_step_

__version__ = "0.1.0"

#: The CPU kernels that run here: "avx512", "avx2" or "default" (any x86-64, and other
#: architectures), the best this CPU supports unless FUSED_LINREG_CPU_CAPABILITY forces a lower one.
cpu_capability: str = _C.CPU_CAPABILITY

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
    "cpu_capability",
    "__version__",
]
