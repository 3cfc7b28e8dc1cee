"""The training data of ``fused_linreg.LinearRegression``: tensors in memory, or a memory-mapped
array streamed in chunks (pinned buffers and a copy stream on CUDA)."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor

from ._estimator_input import NAME, NUMPY_DTYPE, from_numpy, require_finite

# Rows read for the normal equations' shifts (_normal_equations.shifts_of).
HEAD_ROWS = 1024


def fold_sample_weight(X: Tensor, y: Tensor, sample_weight: Tensor) -> tuple[Tensor, Tensor]:
    """Rows for the SGD solver that carry their weights: ``sqrt(w) * [x, 1]`` and ``sqrt(w) * y``.

    The book's loss of a folded row under weights ``[coef, intercept]`` (no separate bias) is
    ``0.5 * w * (x coef^T + intercept - y)^2``: each sample's gradient scaled by its weight,
    as ``SGDRegressor`` weighs samples."""
    root = sample_weight.sqrt().to(X.dtype).unsqueeze(1)
    return torch.cat([X * root, root], dim=1), y * root


class InMemory:
    """The whole data set as one pair of tensors on the training device.

    y is checked when built; X's values are not read beforehand (a pass over X that costs
    as much as a tenth of an epoch): every epoch visits every row, and a NaN or infinity in a
    row makes that minibatch's loss non-finite, so X is checked only when a loss is."""

    def __init__(self, X: Tensor, y: Tensor, sample_weight: Tensor | None) -> None:
        self.X, self.y, self.sample_weight = X, y, sample_weight
        (self.n_rows, self.n_features), self.n_outputs = X.shape, y.shape[1]
        self.dtype, self.device = X.dtype, X.device
        self._folded: tuple[Tensor, Tensor] | None = None

    @property
    def weighted(self) -> bool:
        return self.sample_weight is not None

    def head(self) -> tuple[Tensor, Tensor]:
        """The first rows, for the normal equations' shifts."""
        return self.X[:HEAD_ROWS], self.y[:HEAD_ROWS]

    def zero_prediction_loss(self) -> float:
        """The epoch loss of predicting 0: the scale against which SGD's divergence is judged."""
        if self.sample_weight is None:  # one op: this runs on every partial_fit
            return 0.5 * float(torch.linalg.vector_norm(self.y, dtype=torch.float64)) ** 2 / self.n_rows
        squares = self.y.double().square().sum(dim=1) * self.sample_weight
        return 0.5 * float(squares.sum()) / self.n_rows

    def gram_chunks(self) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        """The rows and their weights in one pass, for the normal equations."""
        yield self.X, self.y, self.sample_weight

    def chunks(self, generator: torch.Generator | None, first_epoch: bool) -> Iterator[tuple[Tensor, Tensor]]:
        """The rows of an SGD epoch (folded with their weights, once per fit, when weighted)."""
        if self.sample_weight is None:
            yield self.X, self.y
            return
        if self._folded is None:
            self._folded = fold_sample_weight(self.X, self.y, self.sample_weight)
        yield self._folded

    def raise_if_not_finite(self) -> None:
        """The ValueError of ``check_array`` if X holds NaN or infinity."""
        require_finite("X", self.X)


class Streamed:
    """Row chunks of a memory-mapped ``X`` (and ``y``), each at most ``chunk_rows`` rows.

    Chunks come in a random order each epoch (rows are shuffled within a chunk by the
    epoch op) and are converted one at a time, so the extra memory is a chunk, never
    the data set: a chunk already of the training dtype and C-contiguous is used in
    place on the CPU (its pages are the file's); others are copied into one staging
    buffer. On CUDA, chunks go through two pinned buffers and are copied on a side
    stream while the previous chunk trains. Finiteness is checked on the first epoch
    (on the device, read once at the epoch's end: no synchronisation per chunk)."""

    def __init__(self, X: np.ndarray, y: np.ndarray | None, n_outputs: int, dtype: torch.dtype,
                 device: torch.device, chunk_rows: int, sample_weight: np.ndarray | None = None) -> None:
        self.X, self.y, self.sample_weight = X, y, sample_weight
        (self.n_rows, self.n_features), self.n_outputs = X.shape, n_outputs
        self.dtype, self.device = dtype, device
        self.bounds = [(start, min(start + chunk_rows, self.n_rows)) for start in range(0, self.n_rows, chunk_rows)]
        self.in_place = (device.type == "cpu" and X.dtype == NUMPY_DTYPE.get(dtype) and X.flags.c_contiguous)
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
        X = from_numpy(self.X[start:stop])
        if not self.in_place:
            X = host_X[:rows].copy_(X)
        if self.y is None:
            return X, None
        return X, host_y[:rows].copy_(from_numpy(self.y[start:stop]).reshape(rows, self.n_outputs))

    def _checked(self, X: Tensor, y: Tensor | None, check: bool) -> None:
        if check:
            self.bad |= ~torch.isfinite(X).all()
            if y is not None:
                self.bad |= ~torch.isfinite(y).all()

    def raise_if_not_finite(self) -> None:
        """After a checked epoch: the ValueError of ``check_array`` if a chunk held NaN or infinity."""
        if bool(self.bad):
            raise ValueError(f"Input X or y contains NaN or infinity. {NAME} needs finite values: remove or "
                             "impute them (e.g. sklearn.impute.SimpleImputer).")

    @property
    def weighted(self) -> bool:
        return self.sample_weight is not None

    def head(self) -> tuple[Tensor, Tensor]:
        """The first rows, for the normal equations' shifts."""
        rows = min(HEAD_ROWS, self.n_rows)
        X = from_numpy(np.asarray(self.X[:rows])).to(device=self.device, dtype=self.dtype)
        y = from_numpy(np.asarray(self.y[:rows])).reshape(rows, self.n_outputs).to(device=self.device, dtype=self.dtype)
        return X, y

    def zero_prediction_loss(self) -> float:
        """The epoch loss of predicting 0: the scale against which SGD's divergence is judged."""
        squares = np.square(np.asarray(self.y, dtype=np.float64)).reshape(self.n_rows, -1).sum(axis=1)
        if self.sample_weight is not None:
            squares = squares * self.sample_weight
        return 0.5 * float(squares.sum()) / self.n_rows

    def _weights(self, start: int, stop: int) -> Tensor | None:
        if self.sample_weight is None:
            return None
        return from_numpy(self.sample_weight[start:stop]).to(device=self.device, dtype=torch.float64)

    def gram_chunks(self) -> Iterator[tuple[Tensor, Tensor, Tensor | None]]:
        """Every chunk in file order with its weights, for the normal equations (values checked)."""
        for (start, stop), X, y in self._bounded_chunks(self.bounds, check=True):
            yield X, y, self._weights(start, stop)

    def chunks(self, generator: torch.Generator | None, first_epoch: bool) -> Iterator[tuple[Tensor, Tensor]]:
        """The chunks of one epoch in a random order (in file order when ``generator`` is None),
        folded with their weights when weighted."""
        for (start, stop), X, y in self._bounded_chunks(self._order(generator), first_epoch):
            weights = self._weights(start, stop)
            yield (X, y) if weights is None else fold_sample_weight(X, y, weights)

    def _bounded_chunks(self, order: list[tuple[int, int]],
                        check: bool) -> Iterator[tuple[tuple[int, int], Tensor, Tensor]]:
        if self.device.type == "cuda":
            yield from self._cuda_chunks(order, check)
            return
        for start, stop in order:
            X, y = self._to_host(start, stop, 0)
            self._checked(X, y, check)
            yield (start, stop), X, y  # type: ignore[misc]

    def _cuda_chunks(self, order: list[tuple[int, int]],
                     check: bool) -> Iterator[tuple[tuple[int, int], Tensor, Tensor]]:
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
            yield (start, stop), device_X, device_y
            self.consumed[slot].record(compute)
