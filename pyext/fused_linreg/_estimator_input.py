"""Input checks of ``fused_linreg.LinearRegression``: hyperparameters (checked in ``fit``, as
scikit-learn's contract asks: ``__init__`` only stores them) and the conversion of arrays,
DataFrames and tensors to checked tensors."""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._checks import number, type_name

NAME = "fused_linreg.LinearRegression"
FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
NUMPY_DTYPE = {torch.float64: np.float64, torch.float32: np.float32, torch.float16: np.float16}
SEED_BOUND = 2**31 - 1


def integer_param(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{NAME}: {name} must be an int, got {type_name(value)}")
    if value < minimum:
        raise ValueError(f"{NAME}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def real_param(name: str, value: object, *, positive: bool) -> float:
    """A finite number, ``> 0`` when ``positive`` else ``>= 0``."""
    result = number("LinearRegression", name, value)
    if not math.isfinite(result) or result < 0 or (positive and result == 0):
        raise ValueError(f"{NAME}: {name} must be a finite number {'>' if positive else '>='} 0, got {value!r}")
    return result


def bool_param(name: str, value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{NAME}: {name} must be a bool, got {type_name(value)}")
    return bool(value)


def seed_of(random_state: object) -> int:
    """A torch seed drawn as scikit-learn's ``check_random_state`` would: None uses numpy's global
    generator, an int is the seed itself, a ``RandomState`` is drawn from (and advanced)."""
    if random_state is None:
        return int(np.random.randint(SEED_BOUND))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(SEED_BOUND))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    raise TypeError(f"{NAME}: random_state must be None, an int or a numpy.random.RandomState, "
                    f"got {type_name(random_state)}")


def chunk_rows(chunk_bytes: int, row_bytes: int, batch_size: int) -> int:
    """Rows per streamed chunk: a whole number of minibatches (so only the last chunk has a short
    one) within ``chunk_bytes``, at least one minibatch."""
    return max(batch_size, chunk_bytes // max(row_bytes, 1) // batch_size * batch_size)


def from_numpy(array: np.ndarray) -> Tensor:
    """``array`` as a tensor sharing its memory (a copy only for negative strides or a foreign byte order)."""
    if not array.dtype.isnative or any(stride < 0 for stride in array.strides):
        array = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("="))
    array = np.asarray(array)
    if array.flags.writeable:
        return torch.from_numpy(array)
    with warnings.catch_warnings():
        # Read-only arrays (memory maps, sklearn's read-only checks) are fine: nothing writes to X or y.
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)
        return torch.from_numpy(array)


def require_finite(name: str, values: Tensor) -> None:
    if not bool(torch.isfinite(values).all()):
        kind = "NaN" if bool(torch.isnan(values).any()) else "infinity"
        raise ValueError(f"Input {name} contains {kind}. {NAME} needs finite values: remove or impute them "
                         "(e.g. sklearn.impute.SimpleImputer).")


def tensor_features(X: Tensor, check_finite: bool = True) -> Tensor:
    """A tensor ``X`` checked as ``check_array`` checks arrays: 2-D, not empty, real, and finite
    unless ``check_finite`` is False (training checks it for free, see ``InMemory``)."""
    if X.layout != torch.strided:
        raise TypeError(f"{NAME}: sparse X is not supported (layout {X.layout}); pass X.to_dense()")
    if X.dim() != 2:
        raise ValueError(f"{NAME}: X must be 2-D (n_samples, n_features), got shape {tuple(X.shape)}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{NAME}: X has shape {tuple(X.shape)}: at least 1 sample and 1 feature are required")
    if X.is_complex():
        raise ValueError(f"{NAME}: complex X is not supported, got {X.dtype}")
    X = X.detach()
    if not X.is_floating_point():
        X = X.to(torch.get_default_dtype())
    if check_finite:
        require_finite("X", X)
    return X


def plain_arrays(X: Any, y: Any | None, check_finite: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Without scikit-learn: ``X`` as a 2-D float array (float32 and float64 kept, others to
    float64; finite if ``check_finite``), ``y`` as a finite 1-D or 2-D array of as many rows."""
    if type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{NAME}: sparse X is not supported; pass X.toarray()")
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{NAME}: X must hold real numbers, got dtype {X.dtype}")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{NAME}: X must be a non-empty 2-D array (n_samples, n_features), got shape {X.shape}")
    if check_finite:
        require_finite("X", from_numpy(X))
    if y is None:
        return X, None
    y = np.asarray(y, dtype=np.float64)
    if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
        raise ValueError(f"{NAME}: y must have shape ({X.shape[0]},) or ({X.shape[0]}, n_outputs), got {y.shape}")
    require_finite("y", from_numpy(y))
    return X, y


def to_numpy(t: Tensor) -> np.ndarray:
    """A numpy copy of ``t``; bfloat16 (which numpy lacks) becomes float32."""
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy().copy()


def sample_weights(sample_weight: Any, n_rows: int) -> np.ndarray | Tensor | None:
    """``sample_weight`` checked as scikit-learn checks it: None, a number (every row that
    weight) or ``n_rows`` finite non-negative values (array-like or tensor). A tensor stays a
    tensor (float64, on its device), anything else becomes a float64 numpy array."""
    if sample_weight is None:
        return None
    if isinstance(sample_weight, numbers.Real) and not isinstance(sample_weight, bool):
        weights: np.ndarray | Tensor = np.full(n_rows, float(sample_weight))
    elif isinstance(sample_weight, Tensor):
        weights = sample_weight.detach()
        if weights.is_complex() or weights.dtype == torch.bool:
            raise ValueError(f"{NAME}: sample_weight must hold real numbers, got {weights.dtype}")
        weights = weights.double()
    else:
        weights = np.asarray(sample_weight)
        if weights.dtype.kind not in "biuf":
            raise ValueError(f"{NAME}: sample_weight must hold real numbers, got dtype {weights.dtype}")
        weights = weights.astype(np.float64, copy=False)
    if tuple(weights.shape) != (n_rows,):
        # scikit-learn's wording (check_sample_weights_shape looks for it).
        raise ValueError(f"sample_weight.shape == {tuple(weights.shape)}, expected ({n_rows},)!")
    values = weights if isinstance(weights, Tensor) else from_numpy(weights)
    require_finite("sample_weight", values)
    if bool((values < 0).any()):
        raise ValueError(f"{NAME}: sample_weight must be non-negative (negative values in data passed to "
                         "`sample_weight`)")
    if not bool(values.sum() > 0):
        raise ValueError(f"{NAME}: sample_weight sums to zero: at least one sample needs a positive weight")
    return weights
