"""``LinearRegression``: a scikit-learn estimator trained by the fused whole-epoch op.

scikit-learn is optional: with it installed the estimator is a ``RegressorMixin,
BaseEstimator`` validated by sklearn's own ``validate_data`` (so ``clone``, ``Pipeline``,
``GridSearchCV`` and ``check_estimator`` work); without it a small base class gives
``get_params``/``set_params``/``repr`` and numpy input is validated here.
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._checks import number, type_name
from .functional import linear
from .fused_step import linreg_epoch_

__all__ = ["LinearRegression"]

_NAME = "fused_linreg.LinearRegression"
_FLOAT_DTYPES = (torch.float64, torch.float32, torch.float16, torch.bfloat16)
_NUMPY_DTYPE = {torch.float64: np.float64, torch.float32: np.float32, torch.float16: np.float16}
_SEED_BOUND = 2**31 - 1

try:
    from sklearn.base import BaseEstimator, RegressorMixin
    from sklearn.exceptions import ConvergenceWarning, NotFittedError
    from sklearn.utils.validation import validate_data
except ImportError:
    validate_data = None

    class ConvergenceWarning(UserWarning):  # type: ignore[no-redef]
        """Training stopped at ``max_iter`` before the stopping rule was met (sklearn's, when installed)."""

    class NotFittedError(ValueError, AttributeError):  # type: ignore[no-redef]
        """The estimator is used before ``fit`` (sklearn's, when installed)."""

    class RegressorMixin:  # type: ignore[no-redef]
        """Stands in for sklearn's mixin; ``score`` is the estimator's own."""

    class BaseEstimator:  # type: ignore[no-redef]
        """``get_params``, ``set_params`` and ``repr`` as scikit-learn's ``BaseEstimator`` gives them."""

        @classmethod
        def _param_names(cls) -> list[str]:
            return [p.name for p in inspect.signature(cls.__init__).parameters.values()
                    if p.kind == inspect.Parameter.KEYWORD_ONLY]

        def get_params(self, deep: bool = True) -> dict[str, Any]:
            return {name: getattr(self, name) for name in self._param_names()}

        def set_params(self, **params: Any) -> BaseEstimator:
            valid = self._param_names()
            for name, value in params.items():
                if name not in valid:
                    raise ValueError(f"Invalid parameter {name!r} for estimator {type(self).__name__}. "
                                     f"Valid parameters are: {valid}.")
                setattr(self, name, value)
            return self

        def __repr__(self) -> str:
            defaults = inspect.signature(type(self).__init__).parameters
            changed = [f"{name}={value!r}" for name, value in self.get_params().items()
                       if value is not defaults[name].default and value != defaults[name].default]
            return f"{type(self).__name__}({', '.join(changed)})"


# ---------------------------------------------------------------------------
# Hyperparameter checks (in fit, as scikit-learn's contract asks: __init__ only stores).
# ---------------------------------------------------------------------------


def _integer(name: str, value: object, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise TypeError(f"{_NAME}: {name} must be an int, got {type_name(value)}")
    if value < minimum:
        raise ValueError(f"{_NAME}: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _real(name: str, value: object, *, positive: bool) -> float:
    """A finite number, ``> 0`` when ``positive`` else ``>= 0``."""
    result = number("LinearRegression", name, value)
    if not math.isfinite(result) or result < 0 or (positive and result == 0):
        raise ValueError(f"{_NAME}: {name} must be a finite number {'>' if positive else '>='} 0, got {value!r}")
    return result


def _boolean(name: str, value: object) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{_NAME}: {name} must be a bool, got {type_name(value)}")
    return bool(value)


def _seed(random_state: object) -> int:
    """A torch seed drawn as scikit-learn's ``check_random_state`` would: None uses numpy's global
    generator, an int is the seed itself, a ``RandomState`` is drawn from (and advanced)."""
    if random_state is None:
        return int(np.random.randint(_SEED_BOUND))
    if isinstance(random_state, np.random.RandomState):
        return int(random_state.randint(_SEED_BOUND))
    if isinstance(random_state, numbers.Integral) and not isinstance(random_state, bool):
        return int(random_state)
    raise TypeError(f"{_NAME}: random_state must be None, an int or a numpy.random.RandomState, "
                    f"got {type_name(random_state)}")


def _chunk_rows(chunk_bytes: int, row_bytes: int, batch_size: int) -> int:
    """Rows per streamed chunk: a whole number of minibatches (so only the last chunk has a short
    one) within ``chunk_bytes``, at least one minibatch."""
    return max(batch_size, chunk_bytes // max(row_bytes, 1) // batch_size * batch_size)


# ---------------------------------------------------------------------------
# Input conversion.
# ---------------------------------------------------------------------------


def _from_numpy(array: np.ndarray) -> Tensor:
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


def _check_finite(name: str, values: Tensor) -> None:
    if not bool(torch.isfinite(values).all()):
        kind = "NaN" if bool(torch.isnan(values).any()) else "infinity"
        raise ValueError(f"Input {name} contains {kind}. {_NAME} needs finite values: remove or impute them "
                         "(e.g. sklearn.impute.SimpleImputer).")


def _tensor_features(X: Tensor, check_finite: bool = True) -> Tensor:
    """A tensor ``X`` checked as ``check_array`` checks arrays: 2-D, not empty, real, and finite
    unless ``check_finite`` is False (training checks it for free, see ``_InMemory``)."""
    if X.layout != torch.strided:
        raise TypeError(f"{_NAME}: sparse X is not supported (layout {X.layout}); pass X.to_dense()")
    if X.dim() != 2:
        raise ValueError(f"{_NAME}: X must be 2-D (n_samples, n_features), got shape {tuple(X.shape)}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{_NAME}: X has shape {tuple(X.shape)}: at least 1 sample and 1 feature are required")
    if X.is_complex():
        raise ValueError(f"{_NAME}: complex X is not supported, got {X.dtype}")
    X = X.detach()
    if not X.is_floating_point():
        X = X.to(torch.get_default_dtype())
    if check_finite:
        _check_finite("X", X)
    return X


def _plain_arrays(X: Any, y: Any | None, check_finite: bool) -> tuple[np.ndarray, np.ndarray | None]:
    """Without scikit-learn: ``X`` as a 2-D float array (float32 and float64 kept, others to
    float64; finite if ``check_finite``), ``y`` as a finite 1-D or 2-D array of as many rows."""
    if type(X).__module__.startswith("scipy.sparse"):
        raise TypeError(f"{_NAME}: sparse X is not supported; pass X.toarray()")
    X = np.asarray(X)
    if X.dtype.kind not in "biuf":
        raise ValueError(f"{_NAME}: X must hold real numbers, got dtype {X.dtype}")
    if X.dtype not in (np.float32, np.float64):
        X = X.astype(np.float64)
    if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{_NAME}: X must be a non-empty 2-D array (n_samples, n_features), got shape {X.shape}")
    if check_finite:
        _check_finite("X", _from_numpy(X))
    if y is None:
        return X, None
    y = np.asarray(y, dtype=np.float64)
    if y.ndim not in (1, 2) or y.shape[0] != X.shape[0]:
        raise ValueError(f"{_NAME}: y must have shape ({X.shape[0]},) or ({X.shape[0]}, n_outputs), got {y.shape}")
    _check_finite("y", _from_numpy(y))
    return X, y


# ---------------------------------------------------------------------------
# Training data: one chunk in memory, or a memory map streamed in chunks.
# ---------------------------------------------------------------------------


class _InMemory:
    """The whole data set as one pair of tensors on the training device.

    y is checked when built; X's values are not read beforehand (a pass over X that costs
    as much as a tenth of an epoch): every epoch visits every row, and a NaN or infinity in a
    row makes that minibatch's loss non-finite, so X is checked only when a loss is."""

    def __init__(self, X: Tensor, y: Tensor) -> None:
        self.X, self.y = X, y
        (self.n_rows, self.n_features), self.n_outputs = X.shape, y.shape[1]
        self.dtype, self.device = X.dtype, X.device

    def chunks(self, generator: torch.Generator | None, first_epoch: bool) -> Iterator[tuple[Tensor, Tensor]]:
        yield self.X, self.y

    def raise_if_not_finite(self) -> None:
        """The ValueError of ``check_array`` if X holds NaN or infinity."""
        _check_finite("X", self.X)


class _Streamed:
    """Row chunks of a memory-mapped ``X`` (and ``y``), each at most ``chunk_rows`` rows.

    Chunks come in a random order each epoch (rows are shuffled within a chunk by the
    epoch op) and are converted one at a time, so the extra memory is a chunk, never
    the data set: a chunk already of the training dtype and C-contiguous is used in
    place on the CPU (its pages are the file's); others are copied into one staging
    buffer. On CUDA, chunks go through two pinned buffers and are copied on a side
    stream while the previous chunk trains. Finiteness is checked on the first epoch
    (on the device, read once at the epoch's end: no synchronisation per chunk)."""

    def __init__(self, X: np.ndarray, y: np.ndarray | None, n_outputs: int, dtype: torch.dtype,
                 device: torch.device, chunk_rows: int) -> None:
        self.X, self.y = X, y
        (self.n_rows, self.n_features), self.n_outputs = X.shape, n_outputs
        self.dtype, self.device = dtype, device
        self.bounds = [(start, min(start + chunk_rows, self.n_rows)) for start in range(0, self.n_rows, chunk_rows)]
        self.in_place = (device.type == "cpu" and X.dtype == _NUMPY_DTYPE.get(dtype) and X.flags.c_contiguous)
        self.bad = torch.zeros((), dtype=torch.bool, device=device)
        rows = min(chunk_rows, self.n_rows)
        slots = 2 if device.type == "cuda" else 1
        pinned = device.type == "cuda"
        self.host = [(torch.empty((0 if self.in_place else rows, X.shape[1]), dtype=dtype, pin_memory=pinned),
                      torch.empty((rows, n_outputs), dtype=dtype, pin_memory=pinned)) for _ in range(slots)]
        if device.type == "cuda":
            self.on_device = [(torch.empty((rows, X.shape[1]), dtype=dtype, device=device),
                               torch.empty((rows, n_outputs), dtype=dtype, device=device)) for _ in range(slots)]
            self.copy_stream = torch.cuda.Stream(device)
            self.copied = [torch.cuda.Event() for _ in range(slots)]
            self.consumed = [torch.cuda.Event() for _ in range(slots)]

    def _order(self, generator: torch.Generator | None) -> list[tuple[int, int]]:
        if generator is None or len(self.bounds) == 1:
            return self.bounds
        order = torch.randperm(len(self.bounds), generator=generator, device=generator.device).tolist()
        return [self.bounds[i] for i in order]

    def _to_host(self, start: int, stop: int, slot: int) -> tuple[Tensor, Tensor | None]:
        """Rows ``start:stop`` as CPU tensors of the training dtype: in place, or copied into ``slot``."""
        host_X, host_y = self.host[slot]
        rows = stop - start
        X = _from_numpy(self.X[start:stop])
        if not self.in_place:
            X = host_X[:rows].copy_(X)
        if self.y is None:
            return X, None
        return X, host_y[:rows].copy_(_from_numpy(self.y[start:stop]).reshape(rows, self.n_outputs))

    def _checked(self, X: Tensor, y: Tensor | None, check: bool) -> None:
        if check:
            self.bad |= ~torch.isfinite(X).all()
            if y is not None:
                self.bad |= ~torch.isfinite(y).all()

    def raise_if_not_finite(self) -> None:
        """After a checked epoch: the ValueError of ``check_array`` if a chunk held NaN or infinity."""
        if bool(self.bad):
            raise ValueError(f"Input X or y contains NaN or infinity. {_NAME} needs finite values: remove or "
                             "impute them (e.g. sklearn.impute.SimpleImputer).")

    def chunks(self, generator: torch.Generator | None, first_epoch: bool) -> Iterator[tuple[Tensor, Tensor]]:
        """The chunks of one epoch in a random order (in file order when ``generator`` is None)."""
        if self.device.type == "cuda":
            yield from self._cuda_chunks(self._order(generator), first_epoch)
            return
        for start, stop in self._order(generator):
            X, y = self._to_host(start, stop, 0)
            self._checked(X, y, first_epoch)
            yield X, y  # type: ignore[misc]

    def _cuda_chunks(self, order: list[tuple[int, int]], check: bool) -> Iterator[tuple[Tensor, Tensor]]:
        compute = torch.cuda.current_stream(self.device)
        for i, (start, stop) in enumerate(order):
            slot, rows = i % 2, stop - start
            self.copied[slot].synchronize()  # the pinned slot's last copy to the device is done: refill it
            host_X, host_y = self._to_host(start, stop, slot)
            device_X, device_y = (buffer[:rows] for buffer in self.on_device[slot])
            with torch.cuda.stream(self.copy_stream):
                self.copy_stream.wait_event(self.consumed[slot])  # the chunk trained from this slot is done
                device_X.copy_(host_X, non_blocking=True)
                if host_y is not None:
                    device_y.copy_(host_y, non_blocking=True)
                self.copied[slot].record(self.copy_stream)
            compute.wait_event(self.copied[slot])
            self._checked(device_X, None if host_y is None else device_y, check)
            yield device_X, device_y
            self.consumed[slot].record(compute)


# ---------------------------------------------------------------------------
# The estimator.
# ---------------------------------------------------------------------------


def _r2_score(y_true: Tensor, y_pred: Tensor) -> float:
    """R² per output, averaged uniformly; as ``sklearn.metrics.r2_score`` (force_finite=True).

    Both are ``(n, k)`` float64. An output whose targets are constant scores 1 when
    predicted exactly and 0 otherwise."""
    ss_res = (y_true - y_pred).square().sum(dim=0)
    ss_tot = (y_true - y_true.mean(dim=0)).square().sum(dim=0)
    constant = ss_tot == 0
    r2 = 1.0 - ss_res / torch.where(constant, torch.ones_like(ss_tot), ss_tot)
    r2 = torch.where(constant, (ss_res == 0).to(r2.dtype), r2)
    return float(r2.mean())


def _to_numpy(t: Tensor) -> np.ndarray:
    """A numpy copy of ``t``; bfloat16 (which numpy lacks) becomes float32."""
    t = t.detach().cpu()
    return (t.float() if t.dtype == torch.bfloat16 else t).numpy().copy()


def _epoch_loss_sum(losses: Tensor, rows: int, batch_size: int) -> Tensor:
    """Sum over the rows of the per-row loss, from the per-minibatch mean losses (the last
    minibatch has ``rows - (len - 1) * batch_size`` rows)."""
    losses = losses.double()
    total = losses.sum() * batch_size
    last = rows - (losses.numel() - 1) * batch_size
    return total if last == batch_size else total - losses[-1] * (batch_size - last)


def _progress_bar(total: int) -> Any:
    """A tqdm bar over ``total`` epochs (tqdm is imported only when asked for)."""
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:
        raise ImportError(f"{_NAME}(progress=True) needs tqdm: pip install 'fused-linreg[progress]' "
                          "(or pip install tqdm), or pass progress=False") from exc
    return tqdm(total=total, desc="epochs", unit="epoch")


class LinearRegression(RegressorMixin, BaseEstimator):
    """Linear regression ``y = X @ coef_.T + intercept_`` trained by minibatch SGD with the fused epoch op.

    A scikit-learn estimator in the manner of ``SGDRegressor``: every epoch is one
    :func:`fused_linreg.linreg_epoch_` over a fresh random permutation of the rows, with
    the book's loss (*Dive into Deep Learning* ch. 3: ``0.5 * mean squared error`` per
    minibatch) and ``torch.optim.SGD``'s update (constant ``lr``, optional momentum and
    weight decay, which applies to the intercept too). Parameters start as in the book:
    weight ~ N(0, 0.01²), intercept 0. Standardise X (``StandardScaler`` in a ``Pipeline``):
    the defaults are chosen for features of unit variance.

    Input: numpy arrays (float32 and float64 are kept, other types become float64; C or
    Fortran order), pandas DataFrames/Series, lists, ``np.memmap`` and torch tensors on
    any device. Predictions follow the input: a tensor for a tensor (on its device), else
    a numpy array of X's float dtype. NaN or infinity in X or y raise ValueError; sparse
    input raises TypeError. A C-contiguous array or tensor of the training dtype is used
    without a copy.

    An ``np.memmap`` X (data larger than memory) is streamed: contiguous chunks of at most
    ``chunk_bytes``, in a random order each epoch and shuffled within, with extra memory
    bounded by a chunk or two, never a copy of the data set. With ``device="cuda"`` its
    chunks go through pinned buffers, copied on a side stream while the previous chunk trains.

    Args:
        lr: learning rate (constant).
        batch_size: rows per minibatch.
        momentum, weight_decay: as in ``torch.optim.SGD``.
        max_iter: most epochs :meth:`fit` trains for.
        tol, n_iter_no_change: the stopping rule of ``SGDRegressor``: training stops when the
            epoch's mean loss has not fallen below ``best_loss - tol`` for ``n_iter_no_change``
            epochs in a row. ``tol=None`` trains exactly ``max_iter`` epochs. Reaching
            ``max_iter`` before the rule is met warns (``ConvergenceWarning``).
        shuffle: shuffle the rows each epoch (and the chunk order of a memory map).
        random_state: seeds the initialisation and the shuffling: None (numpy's global
            generator), an int (every fit gives the same result) or a ``RandomState``.
        warm_start: :meth:`fit` starts from the previous fit's coefficients.
        device: where training runs; None: a tensor X's device, else the CPU.
        dtype: the floating-point type training runs in; None: X's (float32 or float64;
            ``torch.get_default_dtype()`` for an integer tensor).
        chunk_bytes: most bytes of X per streamed chunk of a memory-mapped X.
        progress: show a tqdm progress bar over the epochs (``pip install 'fused-linreg[progress]'``).

    Attributes:
        coef_: ``(n_features,)`` for a 1-D y, else ``(n_outputs, n_features)``; numpy.
        intercept_: ``(n_outputs,)``; numpy.
        weight_, bias_: the same as tensors ``(n_outputs, n_features)`` and ``(n_outputs,)`` on
            the training device, in the training dtype.
        n_features_in_, feature_names_in_ (for a DataFrame X): as in scikit-learn.
        n_iter_: epochs trained by the last :meth:`fit` (1 after :meth:`partial_fit`).
        loss_curve_: mean training loss of every epoch since the last :meth:`fit` (per row,
            each minibatch's loss taken before its update).
    """

    def __init__(
        self,
        *,
        lr: float = 0.01,
        batch_size: int = 32,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        max_iter: int = 1000,
        tol: float | None = 1e-3,
        n_iter_no_change: int = 5,
        shuffle: bool = True,
        random_state: int | np.random.RandomState | None = None,
        warm_start: bool = False,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        chunk_bytes: int = 32 * 2**20,
        progress: bool = False,
    ) -> None:
        self.lr = lr
        self.batch_size = batch_size
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.max_iter = max_iter
        self.tol = tol
        self.n_iter_no_change = n_iter_no_change
        self.shuffle = shuffle
        self.random_state = random_state
        self.warm_start = warm_start
        self.device = device
        self.dtype = dtype
        self.chunk_bytes = chunk_bytes
        self.progress = progress

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()  # type: ignore[misc]
        tags.target_tags.multi_output = True
        tags.target_tags.single_output = True
        return tags

    def __sklearn_is_fitted__(self) -> bool:
        return hasattr(self, "weight_")

    # -- hyperparameters ---------------------------------------------------------------------

    def _checked_hyperparameters(self) -> dict[str, Any]:
        """The hyperparameters, checked, with errors that name them (TypeError or ValueError)."""
        tol = self.tol
        if tol is not None and not math.isfinite(number("LinearRegression", "tol", tol)):
            raise ValueError(f"{_NAME}: tol must be a finite number or None, got {tol!r}")
        device = self.device
        if device is not None and not isinstance(device, (str, torch.device)):
            raise TypeError(f"{_NAME}: device must be a str, torch.device or None, got {type_name(device)}")
        if self.dtype is not None and self.dtype not in _FLOAT_DTYPES:
            raise ValueError(f"{_NAME}: dtype must be None or a floating-point torch.dtype "
                             f"(torch.float64, float32, float16, bfloat16), got {self.dtype!r}")
        return dict(
            lr=_real("lr", self.lr, positive=True),
            batch_size=_integer("batch_size", self.batch_size, 1),
            momentum=_real("momentum", self.momentum, positive=False),
            weight_decay=_real("weight_decay", self.weight_decay, positive=False),
            max_iter=_integer("max_iter", self.max_iter, 1),
            tol=None if tol is None else float(tol),
            n_iter_no_change=_integer("n_iter_no_change", self.n_iter_no_change, 1),
            shuffle=_boolean("shuffle", self.shuffle),
            warm_start=_boolean("warm_start", self.warm_start),
            device=None if device is None else torch.device(device),
            chunk_bytes=_integer("chunk_bytes", self.chunk_bytes, 1),
            progress=_boolean("progress", self.progress),
        )

    # -- input ---------------------------------------------------------------------------------

    def _check_n_features(self, n_features: int, reset: bool) -> None:
        """``n_features_in_`` for input without column names (tensors, memory maps), as validate_data does."""
        if reset:
            self.n_features_in_ = n_features
            if hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
        elif n_features != self.n_features_in_:
            raise ValueError(f"X has {n_features} features, but {type(self).__name__} is expecting "
                             f"{self.n_features_in_} features as input.")

    def _validated_arrays(self, X: Any, y: Any | None, reset: bool,
                          check_finite: bool = True) -> tuple[np.ndarray, np.ndarray | None]:
        """Numpy, pandas or list input through scikit-learn's ``validate_data`` (or our checks
        without it); X's values are checked finite only if ``check_finite`` (y's always)."""
        dtypes = [np.float64, np.float32]
        if validate_data is None:
            X, y = _plain_arrays(X, y, check_finite)
            self._check_n_features(X.shape[1], reset)
            return X, y
        if y is None:
            return validate_data(self, X, reset=reset, dtype=dtypes, ensure_all_finite=check_finite), None
        return validate_data(self, X, y, reset=reset, dtype=dtypes, multi_output=True, y_numeric=True,
                             ensure_all_finite=check_finite)

    def _memmap_features(self, X: np.memmap, reset: bool) -> np.memmap:
        """A memory-mapped X checked without reading it (its values are checked chunk by chunk)."""
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"{_NAME}: X must be a non-empty 2-D array (n_samples, n_features), got shape {X.shape}")
        if X.dtype.kind not in "biuf":
            raise ValueError(f"{_NAME}: X must hold real numbers, got dtype {X.dtype}")
        self._check_n_features(X.shape[1], reset)
        return X

    def _training_dtype(self, X_dtype: torch.dtype) -> torch.dtype:
        if hasattr(self, "weight_"):
            return self.weight_.dtype
        if self.dtype is not None:
            return self.dtype
        return X_dtype if X_dtype in (torch.float32, torch.float64) else torch.float64

    def _training_device(self, device: torch.device | None, X_device: torch.device) -> torch.device:
        if hasattr(self, "weight_"):
            return self.weight_.device
        return device if device is not None else X_device

    def _targets(self, y: Any, n_rows: int, dtype: torch.dtype, device: torch.device) -> Tensor:
        """``y`` as an ``(n, k)`` tensor of the training dtype, checked as validate_data checks it."""
        y = y.detach() if isinstance(y, Tensor) else _from_numpy(np.asarray(y))
        if y.dim() not in (1, 2) or y.shape[0] != n_rows or y.numel() == 0:
            raise ValueError(f"{_NAME}: y must have shape ({n_rows},) or ({n_rows}, n_outputs) to match X, "
                             f"got {tuple(y.shape)}")
        if y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"{_NAME}: y must hold real numbers, got {y.dtype}")
        y = y.to(device=device, dtype=dtype).reshape(n_rows, -1)
        _check_finite("y", y)
        return y

    def _training_data(self, X: Any, y: Any, reset: bool, device: torch.device | None, batch_size: int,
                       chunk_bytes: int) -> tuple[_InMemory | _Streamed, bool]:
        """The data to train on, and whether y is 1-D; sets ``n_features_in_`` (and feature names)."""
        if y is None:
            raise ValueError(f"This {type(self).__name__} estimator requires y to be passed, but the target y is None.")
        if isinstance(X, np.memmap):
            X = self._memmap_features(X, reset)
            y_array = np.asarray(y) if not isinstance(y, np.ndarray) else y
            if y_array.ndim not in (1, 2) or y_array.shape[0] != X.shape[0] or y_array.dtype.kind not in "biuf":
                raise ValueError(f"{_NAME}: y must be real and of shape ({X.shape[0]},) or ({X.shape[0]}, "
                                 f"n_outputs) to match X, got {y_array.shape} of {y_array.dtype}")
            dtype = self._training_dtype(torch.float32 if X.dtype == np.float32 else torch.float64)
            device_ = self._training_device(device, torch.device("cpu"))
            row_bytes = X.shape[1] * torch.empty((), dtype=dtype).element_size()
            k = 1 if y_array.ndim == 1 else y_array.shape[1]
            streamed = _Streamed(X, y_array, k, dtype, device_, _chunk_rows(chunk_bytes, row_bytes, batch_size))
            return streamed, y_array.ndim == 1
        if isinstance(X, Tensor):
            X_t = _tensor_features(X, check_finite=False)
            self._check_n_features(X_t.shape[1], reset)
        else:
            X_np, y = self._validated_arrays(X, y, reset, check_finite=False)
            X_t = _from_numpy(X_np)
        dtype = self._training_dtype(X_t.dtype)
        device_ = self._training_device(device, X_t.device)
        y_1d = (y.dim() if isinstance(y, Tensor) else np.ndim(y)) == 1
        X_t = X_t.to(device=device_, dtype=dtype).contiguous()
        return _InMemory(X_t, self._targets(y, X_t.shape[0], dtype, device_)), y_1d

    def _features(self, X: Any) -> tuple[Tensor, Any]:
        """``X`` for prediction as a tensor, and how to return the output (a device or a numpy dtype)."""
        if isinstance(X, Tensor):
            X_t = _tensor_features(X)
            self._check_n_features(X_t.shape[1], reset=False)
            return X_t, X_t.device
        X_np, _ = self._validated_arrays(X, None, reset=False)
        return _from_numpy(X_np), X_np.dtype

    # -- training ------------------------------------------------------------------------------

    def _initial_state(self, n_features: int, n_outputs: int, dtype: torch.dtype, device: torch.device,
                       warm: bool) -> tuple[Tensor, Tensor, dict[str, Tensor], torch.Generator]:
        """Weight, bias, momentum buffers and generator to train from: the fitted ones (copies, so
        that a failed epoch leaves the fitted model as it was) or fresh ones."""
        generator = torch.Generator(device=device)
        if warm:
            if self.weight_.shape != (n_outputs, n_features):
                raise ValueError(f"{_NAME}: the data has {n_features} features and {n_outputs} outputs, but the "
                                 f"fitted model has {self.weight_.shape[1]} and {self.weight_.shape[0]}")
            generator.set_state(self._generator_state)
            momentum = {name: buffer.clone() for name, buffer in self._momentum_buffers.items()}
            return self.weight_.clone(), self.bias_.clone(), momentum, generator
        seed = _seed(self.random_state)
        generator.manual_seed(seed)
        init = torch.Generator().manual_seed(seed)
        weight = torch.normal(0.0, 0.01, (n_outputs, n_features), generator=init).to(device=device, dtype=dtype)
        return weight, torch.zeros(n_outputs, device=device, dtype=dtype), {}, generator

    def _train(self, data: _InMemory | _Streamed, y_1d: bool, epochs: int, hyper: dict[str, Any], *, warm: bool,
               stopping: bool) -> None:
        """Trains up to ``epochs`` epochs from the fitted state (``warm``) or a fresh one, with the
        stopping rule in ``fit``, and only then sets the fitted attributes."""
        weight, bias, momentum, generator = self._initial_state(data.n_features, data.n_outputs, data.dtype,
                                                                data.device, warm)
        losses: list[float] = []
        best, no_improvement = math.inf, 0
        bar = _progress_bar(epochs) if hyper["progress"] else None
        try:
            for epoch in range(epochs):
                loss = self._epoch(data, weight, bias, momentum, generator, hyper, first=epoch == 0)
                if not math.isfinite(loss) or not bool(torch.isfinite(weight).all() & torch.isfinite(bias).all()):
                    data.raise_if_not_finite()
                    raise ValueError(
                        f"{_NAME}: training diverged in epoch {epoch + 1} (loss {loss}): lr={hyper['lr']} is too "
                        "large for this data. Standardise X (e.g. make_pipeline(StandardScaler(), "
                        "LinearRegression())) and/or lower lr. The estimator was left unchanged.")
                losses.append(loss)
                if bar is not None:
                    bar.update(1)
                    bar.set_postfix(loss=f"{loss:.6g}")
                tol = hyper["tol"]
                if not stopping or tol is None:
                    continue
                no_improvement = no_improvement + 1 if loss > best - tol else 0
                best = min(best, loss)
                if no_improvement >= hyper["n_iter_no_change"]:
                    break
        finally:
            if bar is not None:
                bar.close()
        self.weight_, self.bias_ = weight, bias
        self._momentum_buffers, self._generator_state = momentum, generator.get_state()
        self._y_1d = y_1d
        self.n_iter_ = len(losses)
        self.loss_curve_ = (self.loss_curve_ if warm and not stopping else []) + losses
        if stopping and hyper["tol"] is not None and self.n_iter_ == epochs and no_improvement < \
                hyper["n_iter_no_change"]:
            warnings.warn(f"{_NAME}: max_iter={epochs} epochs reached before the loss stopped improving by "
                          f"tol={hyper['tol']}; consider increasing max_iter or lr, or standardising X.",
                          ConvergenceWarning, stacklevel=3)

    def _epoch(self, data: _InMemory | _Streamed, weight: Tensor, bias: Tensor, momentum: dict[str, Tensor],
               generator: torch.Generator, hyper: dict[str, Any], first: bool) -> float:
        """One epoch over every chunk; the mean loss per row (one synchronisation, at the end)."""
        batch_size = hyper["batch_size"]
        shuffle = hyper["shuffle"]
        total = torch.zeros((), dtype=torch.float64, device=weight.device)
        for X, y in data.chunks(generator if shuffle else None, first):
            indices = None if shuffle else torch.arange(X.shape[0], device=X.device)
            losses = linreg_epoch_(X, y, weight, bias, lr=hyper["lr"], batch_size=batch_size, indices=indices,
                                   generator=generator, momentum=hyper["momentum"],
                                   weight_decay=hyper["weight_decay"], state=momentum)
            total += _epoch_loss_sum(losses, X.shape[0], batch_size)
        if first and isinstance(data, _Streamed):
            data.raise_if_not_finite()
        return float(total) / data.n_rows

    def fit(self, X: Any, y: Any) -> LinearRegression:
        """Trains from scratch (or from the last fit with ``warm_start``) until the stopping rule
        or ``max_iter``; returns ``self``.

        Args:
            X: ``(n_samples, n_features)``: array-like, DataFrame, ``np.memmap`` (streamed) or tensor.
            y: ``(n_samples,)`` or ``(n_samples, n_outputs)``.

        Raises:
            ValueError: for invalid input or hyperparameters, and when training diverges (the
                loss or the weights become non-finite); the estimator is then not fitted.
        """
        hyper = self._checked_hyperparameters()
        warm = hyper["warm_start"] and hasattr(self, "weight_")
        if not warm:
            self._forget()
        data, y_1d = self._training_data(X, y, not warm, hyper["device"], hyper["batch_size"], hyper["chunk_bytes"])
        self._train(data, y_1d, hyper["max_iter"], hyper, warm=warm, stopping=True)
        return self

    def partial_fit(self, X: Any, y: Any) -> LinearRegression:
        """One more epoch from the current coefficients, momentum and random state; returns ``self``.

        The first call initialises the model as :meth:`fit` does. A call that raises leaves the
        model as it was."""
        hyper = self._checked_hyperparameters()
        first = not hasattr(self, "weight_")
        data, y_1d = self._training_data(X, y, first, hyper["device"], hyper["batch_size"], hyper["chunk_bytes"])
        self._train(data, y_1d, 1, hyper, warm=not first, stopping=False)
        return self

    def _forget(self) -> None:
        """Drops the fitted state, so that a fit that fails leaves the estimator unfitted."""
        for name in ("weight_", "bias_", "n_iter_", "loss_curve_", "_momentum_buffers", "_generator_state"):
            if hasattr(self, name):
                delattr(self, name)

    # -- prediction ----------------------------------------------------------------------------

    def _check_fitted(self) -> None:
        if not hasattr(self, "weight_"):
            raise NotFittedError(f"This {type(self).__name__} instance is not fitted yet. Call 'fit' with "
                                 "appropriate arguments before using this estimator.")

    def predict(self, X: Any) -> Any:
        """``X @ coef_.T + intercept_``: ``(n_samples,)`` when fitted on a 1-D y, else ``(n_samples, n_outputs)``.

        A tensor for a tensor X (on X's device, in X's float dtype), else a numpy array of X's
        float dtype (float32 or float64). A memory-mapped X is read in chunks."""
        self._check_fitted()
        if isinstance(X, np.memmap):
            return self._predict_streamed(self._memmap_features(X, reset=False))
        X_t, output = self._features(X)
        out = linear(X_t.to(device=self.weight_.device, dtype=self.weight_.dtype).contiguous(), self.weight_,
                     self.bias_)
        out = out.squeeze(1) if self._y_1d else out
        if isinstance(output, torch.device):
            return out.to(device=output, dtype=X_t.dtype)
        return _to_numpy(out).astype(output, copy=False)

    def _predict_streamed(self, X: np.memmap) -> np.ndarray:
        dtype = np.float32 if X.dtype == np.float32 else np.float64
        out = np.empty((X.shape[0], self.weight_.shape[0]), dtype=dtype)
        row_bytes = X.shape[1] * self.weight_.element_size()
        data = _Streamed(X, None, self.weight_.shape[0], self.weight_.dtype, self.weight_.device,
                         _chunk_rows(_integer("chunk_bytes", self.chunk_bytes, 1), row_bytes, 1))
        start = 0
        for chunk, _ in data.chunks(None, first_epoch=False):
            _check_finite("X", chunk)
            out[start : start + chunk.shape[0]] = _to_numpy(linear(chunk, self.weight_, self.bias_))
            start += chunk.shape[0]
        return out[:, 0] if self._y_1d else out

    def score(self, X: Any, y: Any) -> float:
        """The coefficient of determination R² of :meth:`predict`, averaged uniformly over outputs
        (``sklearn.metrics.r2_score``)."""
        predicted = self.predict(X)
        predicted = predicted if isinstance(predicted, Tensor) else _from_numpy(predicted)
        y_t = y.detach() if isinstance(y, Tensor) else _from_numpy(np.asarray(y, dtype=np.float64))
        n = predicted.shape[0]
        if y_t.shape[0] != n:
            raise ValueError(f"{_NAME}: y has {y_t.shape[0]} rows but X has {n}")
        y_2d, predicted_2d = y_t.reshape(n, -1), predicted.reshape(n, -1)
        if y_2d.shape[1] != predicted_2d.shape[1]:
            # scikit-learn's r2_score wording.
            raise ValueError(f"y_true and y_pred have different number of output ({y_2d.shape[1]}!={predicted_2d.shape[1]})")
        return _r2_score(y_2d.to(predicted.device, torch.float64), predicted_2d.double())

    @property
    def coef_(self) -> np.ndarray:
        """``weight_`` as a numpy array: ``(n_features,)`` when fitted on a 1-D y, else ``(n_outputs, n_features)``."""
        self._check_fitted()
        coef = _to_numpy(self.weight_)
        return coef[0] if self._y_1d else coef

    @property
    def intercept_(self) -> np.ndarray:
        """``bias_`` as a numpy array of shape ``(n_outputs,)``."""
        self._check_fitted()
        return _to_numpy(self.bias_)
