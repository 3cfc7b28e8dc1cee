"""``LinearRegression``: a scikit-learn-style estimator trained by the fused whole-epoch op."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._checks import number
from .functional import linear
from .fused_step import linreg_epoch_

__all__ = ["LinearRegression"]


def _integer(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"fused_linreg.LinearRegression: {name} must be an integer >= {minimum}, got {value!r}")
    return value


def _progress_bar(epochs: range) -> Any:
    """``epochs`` wrapped in a tqdm progress bar (tqdm is imported only when asked for)."""
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:
        raise ImportError(
            "fused_linreg.LinearRegression(progress=True) needs tqdm: pip install tqdm (or pass progress=False)"
        ) from exc
    return tqdm(epochs, desc="epochs", unit="epoch")


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
    """A numpy copy of ``t``; the half types (numpy has no bfloat16) become float32."""
    return t.detach().to(device="cpu", dtype=torch.promote_types(t.dtype, torch.float32)).numpy().copy()


class LinearRegression:
    """Linear regression ``y = X @ weight.T + bias`` trained by minibatch SGD with the fused epoch op.

    Each epoch is one :func:`fused_linreg.linreg_epoch_` call over a fresh random
    permutation of the rows, with the book's loss (*Dive into Deep Learning* ch. 3:
    ``(1/n) * sum_i 0.5 * ||x_i @ weight.T + bias - y_i||^2`` per minibatch) and
    ``torch.optim.SGD``'s update. Parameters start as in the book: weight ~ N(0, 0.01²)
    (standard deviation 0.01) and bias 0.

    Args:
        in_features: number of features ``d``.
        out_features: number of outputs ``k`` (``k <= 16`` is the case the kernels are tuned for).
        lr, momentum, weight_decay: SGD hyperparameters (as in ``torch.optim.SGD``).
        batch_size: rows per minibatch.
        epochs: epochs that :meth:`fit` trains for.
        device, dtype: where and in which floating-point type the parameters live and
            training runs (default: the CPU and ``torch.get_default_dtype()``); inputs are
            converted to them.
        progress: show a tqdm progress bar over the epochs (needs ``tqdm``).
        seed: seeds the initialisation and the shuffling; with a seed, every :meth:`fit`
            gives the same result. None draws a fresh random seed at each (re)initialisation.

    Attributes:
        weight: ``(k, d)`` tensor; bias: ``(k,)`` tensor.
        coef_: numpy copy of ``weight``, shape ``(d,)`` when ``k == 1`` else ``(k, d)``
            (as scikit-learn's regressors); intercept_: numpy copy of ``bias``, ``(k,)``
            (as ``SGDRegressor``).
        history_: mean minibatch loss of every epoch trained since the last :meth:`fit`.
    """

    def __init__(
        self,
        in_features: int,
        out_features: int = 1,
        *,
        lr: float = 0.03,
        batch_size: int = 10,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        epochs: int = 3,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        progress: bool = False,
        seed: int | None = None,
    ) -> None:
        self.in_features = _integer("in_features", in_features, 1)
        self.out_features = _integer("out_features", out_features, 1)
        self.batch_size = _integer("batch_size", batch_size, 1)
        self.epochs = _integer("epochs", epochs, 0)
        self.lr, self.momentum, self.weight_decay = (number("LinearRegression", name, value) for name, value in
                                                     (("lr", lr), ("momentum", momentum),
                                                      ("weight_decay", weight_decay)))
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.dtype = dtype if dtype is not None else torch.get_default_dtype()
        if not self.dtype.is_floating_point:
            raise ValueError(f"fused_linreg.LinearRegression: dtype must be a floating-point type, got {self.dtype}")
        self.progress = progress
        self.seed = seed
        self._generator = torch.Generator()
        self._reset()

    def _reset(self) -> None:
        """Re-seeds the generator, re-initialises the parameters and forgets the training state."""
        if self.seed is None:
            self._generator.seed()
        else:
            self._generator.manual_seed(self.seed)
        weight = torch.normal(0.0, 0.01, (self.out_features, self.in_features), generator=self._generator)
        self.weight: Tensor = weight.to(device=self.device, dtype=self.dtype)
        self.bias: Tensor = torch.zeros(self.out_features, device=self.device, dtype=self.dtype)
        self._state: dict[str, Tensor] = {}
        self.history_: list[float] = []

    def _as_tensor(self, data: Any) -> Tensor:
        return torch.as_tensor(data, device=self.device, dtype=self.dtype)

    def _features(self, X: Any) -> Tensor:
        """``X`` as an ``(n, d)`` tensor of the estimator's dtype, on its device."""
        X = self._as_tensor(X)
        if X.dim() != 2 or X.shape[1] != self.in_features:
            raise ValueError(
                f"fused_linreg.LinearRegression: X must have shape (n, {self.in_features}), got {tuple(X.shape)}"
            )
        return X

    def _targets(self, y: Any, n: int) -> Tensor:
        """``y`` as an ``(n, k)`` tensor, or ``(n,)`` when ``k == 1``."""
        y = self._as_tensor(y)
        k = self.out_features
        if y.shape != (n, k) and not (k == 1 and y.shape == (n,)):
            one_output = f" or ({n},)" if k == 1 else ""
            raise ValueError(
                f"fused_linreg.LinearRegression: y must have shape ({n}, {k}){one_output} to match X, "
                f"got {tuple(y.shape)}"
            )
        return y

    def _epoch(self, X: Tensor, y: Tensor, lr: float, batch_size: int) -> float:
        losses = linreg_epoch_(
            X,
            y,
            self.weight,
            self.bias,
            lr=lr,
            batch_size=batch_size,
            generator=self._generator,
            momentum=self.momentum,
            weight_decay=self.weight_decay,
            state=self._state,
        )
        mean_loss = float(losses.double().mean())
        self.history_.append(mean_loss)
        return mean_loss

    def _data(self, X: Any, y: Any) -> tuple[Tensor, Tensor]:
        X_t = self._features(X)
        return X_t, self._targets(y, X_t.shape[0])

    def _train(self, X: Tensor, y: Tensor, epochs: int, lr: float, batch_size: int) -> LinearRegression:
        epoch_range = _progress_bar(range(epochs)) if self.progress else range(epochs)
        for _ in epoch_range:
            loss = self._epoch(X, y, lr, batch_size)
            if self.progress:
                epoch_range.set_postfix(loss=f"{loss:.6g}")
        return self

    def fit(
        self,
        X: Any,
        y: Any,
        *,
        epochs: int | None = None,
        batch_size: int | None = None,
        lr: float | None = None,
    ) -> LinearRegression:
        """Re-initialises the parameters and trains for ``epochs`` epochs; returns ``self``.

        Args:
            X: ``(n, d)`` features (a tensor, numpy array or nested lists).
            y: ``(n,)`` or ``(n, 1)`` targets for one output, ``(n, k)`` for ``k``.
            epochs, batch_size, lr: override the constructor's values for this call.
        """
        epochs = self.epochs if epochs is None else _integer("epochs", epochs, 0)
        batch_size = self.batch_size if batch_size is None else _integer("batch_size", batch_size, 1)
        X_t, y_t = self._data(X, y)
        self._reset()
        return self._train(X_t, y_t, epochs, self.lr if lr is None else float(lr), batch_size)

    def partial_fit(self, X: Any, y: Any) -> LinearRegression:
        """Trains one more epoch from the current parameters and momentum state; returns ``self``."""
        return self._train(*self._data(X, y), 1, self.lr, self.batch_size)

    def predict(self, X: Any) -> Tensor:
        """``X @ weight.T + bias``: shape ``(n,)`` for one output, ``(n, k)`` otherwise."""
        out = linear(self._features(X), self.weight, self.bias)
        return out.squeeze(1) if self.out_features == 1 else out

    def score(self, X: Any, y: Any) -> float:
        """The coefficient of determination R² of ``predict(X)``, averaged uniformly over outputs."""
        X_t, y_t = self._data(X, y)
        n, k = X_t.shape[0], self.out_features
        return _r2_score(y_t.double().reshape(n, k), self.predict(X_t).double().reshape(n, k))

    @property
    def coef_(self) -> np.ndarray:
        """``weight`` as a numpy array: ``(d,)`` for one output, ``(k, d)`` otherwise."""
        coef = _to_numpy(self.weight)
        return coef[0] if self.out_features == 1 else coef

    @property
    def intercept_(self) -> np.ndarray:
        """``bias`` as a numpy array of shape ``(k,)``."""
        return _to_numpy(self.bias)

    def __repr__(self) -> str:
        return (
            f"LinearRegression(in_features={self.in_features}, out_features={self.out_features}, lr={self.lr}, "
            f"batch_size={self.batch_size}, momentum={self.momentum}, weight_decay={self.weight_decay}, "
            f"epochs={self.epochs}, device={self.device}, dtype={self.dtype})"
        )
