"""``LinearRegression``: a scikit-learn estimator trained by the fused whole-epoch op.

scikit-learn is optional: with it installed the estimator is a ``RegressorMixin,
BaseEstimator`` validated by sklearn's own ``validate_data`` (so ``clone``, ``Pipeline``,
``GridSearchCV`` and ``check_estimator`` work); without it a small base class gives
``get_params``/``set_params``/``repr`` and numpy input is validated here.
"""

from __future__ import annotations

import math
import warnings
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ._checks import number, type_name
from ._estimator_data import InMemory, Streamed
from ._estimator_input import (FLOAT_DTYPES, NAME, bool_param, chunk_rows, from_numpy, integer_param,
                               plain_arrays, real_param, require_finite, sample_weights, seed_of, tensor_features, to_numpy)
from ._normal_equations import GramSums, common_shifts, distributed, shifts_of, solve
from ._sklearn import BaseEstimator, ConvergenceWarning, NotFittedError, RegressorMixin, validate_data
from .functional import linear
from .fused_step import BIAS_BUFFER, WEIGHT_BUFFER, linreg_epoch_

__all__ = ["LinearRegression"]

SOLVERS = ("auto", "normal", "sgd")
# solver="auto" takes the normal equations up to this many columns (features + outputs + 1):
# there one pass costs less than the few epochs SGD needs at least (README, "Solvers").
AUTO_NORMAL_MAX_COLUMNS = 1024
# An SGD epoch whose loss exceeds this multiple of the fit's reference loss diverges (README).
DIVERGENCE_FACTOR = 1e4

# ---------------------------------------------------------------------------
# The estimator.
# ---------------------------------------------------------------------------


def _r2_score(y_true: Tensor, y_pred: Tensor, sample_weight: Tensor | None = None) -> float:
    """R² per output, averaged uniformly; as ``sklearn.metrics.r2_score`` (force_finite=True).

    Both are ``(n, k)`` float64, the weights ``(n,)`` float64. An output whose targets are
    constant scores 1 when predicted exactly and 0 otherwise."""
    w = torch.ones_like(y_true[:, 0]) if sample_weight is None else sample_weight
    w = w.unsqueeze(1)
    ss_res = (w * (y_true - y_pred).square()).sum(dim=0)
    mean = (w * y_true).sum(dim=0) / w.sum()
    ss_tot = (w * (y_true - mean).square()).sum(dim=0)
    constant = ss_tot == 0
    r2 = 1.0 - ss_res / torch.where(constant, torch.ones_like(ss_tot), ss_tot)
    r2 = torch.where(constant, (ss_res == 0).to(r2.dtype), r2)
    return float(r2.mean())


def _epoch_loss_sum(losses: Tensor, rows: int, batch_size: int) -> Tensor:
    """Sum over the rows of the per-row loss, from the per-minibatch mean losses (the last
    minibatch has ``rows - (len - 1) * batch_size`` rows)."""
    losses = losses.double()
    total = losses.sum() * batch_size
    last = rows - (losses.numel() - 1) * batch_size
    return total if last == batch_size else total - losses[-1] * (batch_size - last)


def _folded(weight: Tensor, bias: Tensor,
            momentum: dict[str, Tensor]) -> tuple[tuple[Tensor, None], dict[str, Tensor]]:
    """Parameters and momentum for folded weighted rows: the intercept as a last weight column."""
    state = {}
    if WEIGHT_BUFFER in momentum:
        state[WEIGHT_BUFFER] = torch.cat([momentum[WEIGHT_BUFFER], momentum[BIAS_BUFFER].unsqueeze(1)], dim=1)
    return (torch.cat([weight, bias.unsqueeze(1)], dim=1), None), state


def _unfolded(folded: Tensor, state: dict[str, Tensor],
              n_features: int) -> tuple[Tensor, Tensor, dict[str, Tensor]]:
    """The inverse of :func:`_folded`."""
    momentum = {}
    if WEIGHT_BUFFER in state:
        buffer = state[WEIGHT_BUFFER]
        momentum = {WEIGHT_BUFFER: buffer[:, :n_features].contiguous(), BIAS_BUFFER: buffer[:, n_features].contiguous()}
    return folded[:, :n_features].contiguous(), folded[:, n_features].contiguous(), momentum


def _progress_bar(total: int) -> Any:
    """A tqdm bar over ``total`` epochs (tqdm is imported only when asked for)."""
    try:
        from tqdm.auto import tqdm
    except ImportError as exc:
        raise ImportError(f"{NAME}(progress=True) needs tqdm: pip install 'fused-linreg[progress]' "
                          "(or pip install tqdm), or pass progress=False") from exc
    return tqdm(total=total, desc="epochs", unit="epoch")


class LinearRegression(RegressorMixin, BaseEstimator):
    """Linear regression ``y = X @ coef_.T + intercept_``: solved exactly from the normal
    equations in one pass over X, or trained by minibatch SGD with the fused epoch op.

    ``solver="normal"``: one fused pass (:func:`torch.ops.fused_linreg.linreg_gram`) sums, in
    float64, XᵀX, Xᵀy and the column sums about the mean of the first rows, then a Cholesky
    solve (the minimum-norm solution, scikit-learn's, when columns are collinear or constant):
    the least-squares answer of ``sklearn.linear_model.LinearRegression``, with
    ``sample_weight`` as there. A memory-mapped X is read once, chunk by chunk;
    :meth:`partial_fit` adds each call's sums to the earlier ones (an exact fit of all rows
    seen); under ``torch.distributed`` each rank passes its own rows and the sums are
    all-reduced. Accurate to about ``cond(X)² · 1e-16`` relative (the normal equations square
    X's condition number). ``weight_decay`` > 0 solves the ridge problem that the SGD solver
    with that weight decay converges to (``_normal_equations`` states it).

    ``solver="sgd"``: a scikit-learn estimator in the manner of ``SGDRegressor``: every epoch is one
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

    ``solver="auto"`` (default): the normal equations when ``n_features + n_outputs + 1 <=
    AUTO_NORMAL_MAX_COLUMNS`` (1024), where one pass costs less than the epochs SGD needs;
    SGD beyond (the README's "Solvers" has the measurements).

    SGD that diverges (an epoch's mean loss non-finite, or over ``DIVERGENCE_FACTOR`` = 1e4
    times the reference loss: that of predicting 0, or the first epoch's where that is 0)
    raises ValueError in every dtype and leaves the estimator as it was.

    Args:
        solver: ``"auto"``, ``"normal"`` or ``"sgd"`` (above).
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
        solver_: the solver the last fit used (``"normal"`` or ``"sgd"``).
        n_iter_: epochs trained by the last :meth:`fit` (1 after :meth:`partial_fit`; 1 pass
            for the normal equations).
        loss_curve_: mean training loss of every epoch since the last :meth:`fit` (per row,
            each minibatch's loss taken before its update); for the normal equations the
            loss of the solution, once per fit or partial_fit.
    """

    def __init__(
        self,
        *,
        solver: str = "auto",
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
        self.solver = solver
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
            raise ValueError(f"{NAME}: tol must be a finite number or None, got {tol!r}")
        device = self.device
        if device is not None and not isinstance(device, (str, torch.device)):
            raise TypeError(f"{NAME}: device must be a str, torch.device or None, got {type_name(device)}")
        if not isinstance(self.solver, str) or self.solver not in SOLVERS:
            raise ValueError(f"{NAME}: solver must be one of {', '.join(map(repr, SOLVERS))}, got {self.solver!r}")
        if self.dtype is not None and self.dtype not in FLOAT_DTYPES:
            raise ValueError(f"{NAME}: dtype must be None or a floating-point torch.dtype "
                             f"(torch.float64, float32, float16, bfloat16), got {self.dtype!r}")
        return dict(
            solver=self.solver,
            lr=real_param("lr", self.lr, positive=True),
            batch_size=integer_param("batch_size", self.batch_size, 1),
            momentum=real_param("momentum", self.momentum, positive=False),
            weight_decay=real_param("weight_decay", self.weight_decay, positive=False),
            max_iter=integer_param("max_iter", self.max_iter, 1),
            tol=None if tol is None else float(tol),
            n_iter_no_change=integer_param("n_iter_no_change", self.n_iter_no_change, 1),
            shuffle=bool_param("shuffle", self.shuffle),
            warm_start=bool_param("warm_start", self.warm_start),
            device=None if device is None else torch.device(device),
            chunk_bytes=integer_param("chunk_bytes", self.chunk_bytes, 1),
            progress=bool_param("progress", self.progress),
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
            X, y = plain_arrays(X, y, check_finite)
            self._check_n_features(X.shape[1], reset)
            return X, y
        if y is None:
            return validate_data(self, X, reset=reset, dtype=dtypes, ensure_all_finite=check_finite), None
        return validate_data(self, X, y, reset=reset, dtype=dtypes, multi_output=True, y_numeric=True,
                             ensure_all_finite=check_finite)

    def _memmap_features(self, X: np.memmap, reset: bool) -> np.memmap:
        """A memory-mapped X checked without reading it (its values are checked chunk by chunk)."""
        if X.ndim != 2 or X.shape[0] == 0 or X.shape[1] == 0:
            raise ValueError(f"{NAME}: X must be a non-empty 2-D array (n_samples, n_features), got shape {X.shape}")
        if X.dtype.kind not in "biuf":
            raise ValueError(f"{NAME}: X must hold real numbers, got dtype {X.dtype}")
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

    def _targets(self, y: Any, n_rows: int, dtype: torch.dtype, device: torch.device, validated: bool) -> Tensor:
        """``y`` as an ``(n, k)`` tensor of the training dtype, checked as validate_data checks it
        (its values once: not again when ``validated`` and of the training dtype already)."""
        y = y.detach() if isinstance(y, Tensor) else from_numpy(np.asarray(y))
        if y.dim() not in (1, 2) or y.shape[0] != n_rows or y.numel() == 0:
            raise ValueError(f"{NAME}: y must have shape ({n_rows},) or ({n_rows}, n_outputs) to match X, "
                             f"got {tuple(y.shape)}")
        if y.is_complex() or y.dtype == torch.bool:
            raise ValueError(f"{NAME}: y must hold real numbers, got {y.dtype}")
        converted = y.dtype != dtype  # a narrower dtype can overflow to infinity
        y = y.to(device=device, dtype=dtype).reshape(n_rows, -1)
        if converted or not validated:
            require_finite("y", y)
        return y

    def _training_data(self, X: Any, y: Any, sample_weight: Any, reset: bool, device: torch.device | None,
                       batch_size: int, chunk_bytes: int) -> tuple[InMemory | Streamed, bool]:
        """The data to train on, and whether y is 1-D; sets ``n_features_in_`` (and feature names)."""
        if y is None:
            raise ValueError(f"This {type(self).__name__} estimator requires y to be passed, but the target y is None.")
        if isinstance(X, np.memmap):
            X = self._memmap_features(X, reset)
            y_array = np.asarray(y) if not isinstance(y, np.ndarray) else y
            if y_array.ndim not in (1, 2) or y_array.shape[0] != X.shape[0] or y_array.dtype.kind not in "biuf":
                raise ValueError(f"{NAME}: y must be real and of shape ({X.shape[0]},) or ({X.shape[0]}, "
                                 f"n_outputs) to match X, got {y_array.shape} of {y_array.dtype}")
            dtype = self._training_dtype(torch.float32 if X.dtype == np.float32 else torch.float64)
            device_ = self._training_device(device, torch.device("cpu"))
            row_bytes = X.shape[1] * torch.empty((), dtype=dtype).element_size()
            k = 1 if y_array.ndim == 1 else y_array.shape[1]
            weights = sample_weights(sample_weight, X.shape[0])
            weights = to_numpy(weights) if isinstance(weights, Tensor) else weights
            streamed = Streamed(X, y_array, k, dtype, device_, chunk_rows(chunk_bytes, row_bytes, batch_size),
                                weights)
            return streamed, y_array.ndim == 1
        if isinstance(X, Tensor):
            X_t = tensor_features(X, check_finite=False)
            self._check_n_features(X_t.shape[1], reset)
        else:
            X_np, y = self._validated_arrays(X, y, reset, check_finite=False)
            X_t = from_numpy(X_np)
        dtype = self._training_dtype(X_t.dtype)
        device_ = self._training_device(device, X_t.device)
        y_1d = (y.dim() if isinstance(y, Tensor) else np.ndim(y)) == 1
        X_t = X_t.to(device=device_, dtype=dtype).contiguous()
        weights = sample_weights(sample_weight, X_t.shape[0])
        if weights is not None:
            weights = (weights if isinstance(weights, Tensor) else from_numpy(weights)).to(device_, torch.float64)
        y_t = self._targets(y, X_t.shape[0], dtype, device_, validated=not isinstance(X, Tensor))
        return InMemory(X_t, y_t, weights), y_1d

    def _features(self, X: Any) -> tuple[Tensor, Any]:
        """``X`` for prediction as a tensor, and how to return the output (a device or a numpy dtype)."""
        if isinstance(X, Tensor):
            X_t = tensor_features(X)
            self._check_n_features(X_t.shape[1], reset=False)
            return X_t, X_t.device
        X_np, _ = self._validated_arrays(X, None, reset=False)
        return from_numpy(X_np), X_np.dtype

    # -- training ------------------------------------------------------------------------------

    def _initial_state(self, n_features: int, n_outputs: int, dtype: torch.dtype, device: torch.device,
                       warm: bool) -> tuple[Tensor, Tensor, dict[str, Tensor], torch.Generator]:
        """Weight, bias, momentum buffers and generator to train from: the fitted ones (copies, so
        that a failed epoch leaves the fitted model as it was) or fresh ones."""
        generator = torch.Generator(device=device)
        if warm:
            if self.weight_.shape != (n_outputs, n_features):
                raise ValueError(f"{NAME}: the data has {n_features} features and {n_outputs} outputs, but the "
                                 f"fitted model has {self.weight_.shape[1]} and {self.weight_.shape[0]}")
            generator.set_state(self._generator_state)
            momentum = {name: buffer.clone() for name, buffer in self._momentum_buffers.items()}
            return self.weight_.clone(), self.bias_.clone(), momentum, generator
        seed = seed_of(self.random_state)
        generator.manual_seed(seed)
        init = torch.Generator().manual_seed(seed)
        weight = torch.normal(0.0, 0.01, (n_outputs, n_features), generator=init).to(device=device, dtype=dtype)
        return weight, torch.zeros(n_outputs, device=device, dtype=dtype), {}, generator

    def _train(self, data: InMemory | Streamed, y_1d: bool, epochs: int, hyper: dict[str, Any], *, warm: bool,
               stopping: bool) -> None:
        """Trains up to ``epochs`` epochs from the fitted state (``warm``) or a fresh one, with the
        stopping rule in ``fit``, and only then sets the fitted attributes."""
        weight, bias, momentum, generator = self._initial_state(data.n_features, data.n_outputs, data.dtype,
                                                                data.device, warm)
        # Weighted rows come folded ([x, 1] scaled by sqrt(w)): the intercept is their last weight column.
        params, state = _folded(weight, bias, momentum) if data.weighted else ((weight, bias), momentum)
        losses: list[float] = []
        # The scale divergence is judged against: the loss of predicting 0 (the first epoch's loss
        # where that is 0, as for all-zero targets).
        reference = data.zero_prediction_loss() or None
        best, no_improvement = math.inf, 0
        bar = _progress_bar(epochs) if hyper["progress"] else None
        try:
            for epoch in range(epochs):
                loss = self._epoch(data, *params, state, generator, hyper, first=epoch == 0)
                if reference is None:
                    reference = loss or None
                if not math.isfinite(loss) or (reference is not None and loss > DIVERGENCE_FACTOR * reference) or not all(
                        bool(torch.isfinite(p).all()) for p in params if p is not None):
                    data.raise_if_not_finite()
                    raise ValueError(
                        f"{NAME}: training diverged in epoch {epoch + 1} (mean loss {loss:.6g}, reference loss "
                        f"{reference}): lr={hyper['lr']} is too large for this data. Standardise X (e.g. "
                        "make_pipeline(StandardScaler(), LinearRegression())), lower lr, or use "
                        "solver='normal'. The estimator was left unchanged.")
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
        if data.weighted:
            weight, bias, momentum = _unfolded(params[0], state, data.n_features)
        self.weight_, self.bias_ = weight, bias
        self._momentum_buffers, self._generator_state = momentum, generator.get_state()
        self._y_1d = y_1d
        self.solver_ = "sgd"
        self._gram_sums = None
        self.n_iter_ = len(losses)
        self.loss_curve_ = (self.loss_curve_ if warm and not stopping else []) + losses
        if stopping and hyper["tol"] is not None and self.n_iter_ == epochs and no_improvement < \
                hyper["n_iter_no_change"]:
            warnings.warn(f"{NAME}: max_iter={epochs} epochs reached before the loss stopped improving by "
                          f"tol={hyper['tol']}; consider increasing max_iter or lr, or standardising X.",
                          ConvergenceWarning, stacklevel=3)

    def _solve(self, data: InMemory | Streamed, y_1d: bool, hyper: dict[str, Any], *, accumulate: bool) -> None:
        """The normal equations of ``data`` (added to the earlier sums when ``accumulate``), solved;
        sets the fitted attributes only when everything succeeded."""
        earlier: GramSums | None = self._gram_sums if accumulate else None
        if earlier is not None and earlier.y_shift.numel() != data.n_outputs:
            raise ValueError(f"{NAME}: y has {data.n_outputs} outputs, but the model was fitted on "
                             f"{earlier.y_shift.numel()}")
        if earlier is not None:
            x_shift, y_shift = earlier.x_shift, earlier.y_shift
        else:
            x_shift, y_shift = shifts_of(*data.head())
            if distributed():
                x_shift, y_shift = common_shifts(x_shift, y_shift)
        sums = GramSums.empty(x_shift, y_shift)
        for X, y, sample_weight in data.gram_chunks():
            sums.add(X, y, sample_weight)
        if distributed():
            sums.all_reduce()
        if not bool(torch.isfinite(sums.gram).all()):
            data.raise_if_not_finite()
            raise ValueError(f"{NAME}: the sums of squares of X and y overflow float64: scale X and y")
        if earlier is not None:
            sums.gram += earlier.gram
            sums.rows += earlier.rows
        coef, intercept, loss = solve(sums, hyper["weight_decay"])
        generator = torch.Generator(device=data.device)
        generator.manual_seed(seed_of(self.random_state))
        self.weight_ = coef.to(device=data.device, dtype=data.dtype)
        self.bias_ = intercept.to(device=data.device, dtype=data.dtype)
        self._momentum_buffers, self._generator_state = {}, generator.get_state()
        self._y_1d = y_1d
        self.solver_ = "normal"
        self._gram_sums = sums
        self.n_iter_ = 1
        self.loss_curve_ = (self.loss_curve_ if accumulate else []) + [loss]

    def _resolved_solver(self, hyper: dict[str, Any], data: InMemory | Streamed) -> str:
        if hyper["solver"] != "auto":
            return hyper["solver"]
        columns = data.n_features + data.n_outputs + 1
        return "normal" if columns <= AUTO_NORMAL_MAX_COLUMNS else "sgd"

    def _epoch(self, data: InMemory | Streamed, weight: Tensor, bias: Tensor, momentum: dict[str, Tensor],
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
        if first and isinstance(data, Streamed):
            data.raise_if_not_finite()
        return float(total) / data.n_rows

    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LinearRegression:
        """Solves the normal equations, or trains by SGD from scratch (or from the last fit with
        ``warm_start``) until the stopping rule or ``max_iter``; returns ``self``.

        Args:
            X: ``(n_samples, n_features)``: array-like, DataFrame, ``np.memmap`` (streamed) or tensor.
            y: ``(n_samples,)`` or ``(n_samples, n_outputs)``.
            sample_weight: None, a number or ``(n_samples,)`` non-negative weights: each sample's
                squared error counts that many times (scikit-learn's meaning).

        Raises:
            ValueError: for invalid input or hyperparameters, and when SGD diverges (the loss
                grows by orders of magnitude or becomes non-finite); the estimator is then not fitted.
        """
        hyper = self._checked_hyperparameters()
        warm = hyper["warm_start"] and hasattr(self, "weight_")
        if not warm:
            self._forget()
        data, y_1d = self._training_data(X, y, sample_weight, not warm, hyper["device"], hyper["batch_size"],
                                         hyper["chunk_bytes"])
        if self._resolved_solver(hyper, data) == "normal":
            self._solve(data, y_1d, hyper, accumulate=False)
        else:
            self._train(data, y_1d, hyper["max_iter"], hyper, warm=warm, stopping=True)
        return self

    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> LinearRegression:
        """Learns from one more batch of rows; returns ``self``.

        With the normal equations, adds the batch's sums to those of every earlier call and
        solves again (the exact fit of all rows seen); with SGD, one more epoch from the current
        coefficients, momentum and random state. The first call initialises the model as
        :meth:`fit` does and picks the solver. A call that raises leaves the model as it was."""
        hyper = self._checked_hyperparameters()
        first = not hasattr(self, "weight_")
        data, y_1d = self._training_data(X, y, sample_weight, first, hyper["device"], hyper["batch_size"],
                                         hyper["chunk_bytes"])
        solver = self._resolved_solver(hyper, data) if first else self.solver_
        if solver == "normal":
            self._solve(data, y_1d, hyper, accumulate=not first)
        else:
            self._train(data, y_1d, 1, hyper, warm=not first, stopping=False)
        return self

    def _forget(self) -> None:
        """Drops the fitted state, so that a fit that fails leaves the estimator unfitted."""
        for name in ("weight_", "bias_", "n_iter_", "loss_curve_", "solver_", "_momentum_buffers", "_generator_state",
                     "_gram_sums"):
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
        return to_numpy(out).astype(output, copy=False)

    def _predict_streamed(self, X: np.memmap) -> np.ndarray:
        dtype = np.float32 if X.dtype == np.float32 else np.float64
        out = np.empty((X.shape[0], self.weight_.shape[0]), dtype=dtype)
        row_bytes = X.shape[1] * self.weight_.element_size()
        data = Streamed(X, None, self.weight_.shape[0], self.weight_.dtype, self.weight_.device,
                         chunk_rows(integer_param("chunk_bytes", self.chunk_bytes, 1), row_bytes, 1))
        start = 0
        for chunk, _ in data.chunks(None, first_epoch=False):
            require_finite("X", chunk)
            out[start : start + chunk.shape[0]] = to_numpy(linear(chunk, self.weight_, self.bias_))
            start += chunk.shape[0]
        return out[:, 0] if self._y_1d else out

    def score(self, X: Any, y: Any, sample_weight: Any = None) -> float:
        """The coefficient of determination R² of :meth:`predict`, averaged uniformly over outputs
        (``sklearn.metrics.r2_score``, weighted by ``sample_weight`` as there)."""
        predicted = self.predict(X)
        predicted = predicted if isinstance(predicted, Tensor) else from_numpy(predicted)
        y_t = y.detach() if isinstance(y, Tensor) else from_numpy(np.asarray(y, dtype=np.float64))
        n = predicted.shape[0]
        if y_t.shape[0] != n:
            raise ValueError(f"{NAME}: y has {y_t.shape[0]} rows but X has {n}")
        y_2d, predicted_2d = y_t.reshape(n, -1), predicted.reshape(n, -1)
        if y_2d.shape[1] != predicted_2d.shape[1]:
            # scikit-learn's r2_score wording.
            raise ValueError(f"y_true and y_pred have different number of output ({y_2d.shape[1]}!={predicted_2d.shape[1]})")
        weights = sample_weights(sample_weight, n)
        if weights is not None:
            weights = (weights if isinstance(weights, Tensor) else from_numpy(weights)).to(predicted.device)
        return _r2_score(y_2d.to(predicted.device, torch.float64), predicted_2d.double(), weights)

    @property
    def coef_(self) -> np.ndarray:
        """``weight_`` as a numpy array: ``(n_features,)`` when fitted on a 1-D y, else ``(n_outputs, n_features)``."""
        self._check_fitted()
        coef = to_numpy(self.weight_)
        return coef[0] if self._y_1d else coef

    @property
    def intercept_(self) -> np.ndarray:
        """``bias_`` as a numpy array of shape ``(n_outputs,)``."""
        self._check_fitted()
        return to_numpy(self.bias_)
