"""The exact solver of ``fused_linreg.LinearRegression``: the normal equations.

One pass over X (``torch.ops.fused_linreg.linreg_gram``) gives, in float64, the weighted sums
of the augmented rows ``[x - x_shift, y - y_shift, 1]`` times themselves. The shifts (the mean
of the first rows) keep the centred sums from cancelling when the data's mean is far from 0.
The sums of row shards that share the shifts add up: chunks of a memory map, successive
``partial_fit`` calls, and the ranks of ``torch.distributed`` (one all-reduce).

The least-squares problem solved, over n rows with weights w and ``lam = weight_decay``:

    minimise  (1 / (2 n)) * sum_i w_i ||x_i coef^T + intercept - y_i||^2
              + (lam / 2) * (||coef||^2 + ||intercept||^2)

which for ``lam = 0`` is ordinary (weighted) least squares, and otherwise the point that the
SGD solver with that coupled weight decay (applied to the intercept too) converges to: its
epoch loss is the same mean over rows of ``0.5 * w * squared error``, as scikit-learn's
``SGDRegressor`` weighs samples.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from ._estimator_input import NAME

__all__ = ["GramSums", "shifts_of", "solve"]

# Rows whose mean is the shift: enough to land within a fraction of a standard deviation
# of the mean, few enough to cost nothing.
_SHIFT_ROWS = 1024
# A column whose variance left after regressing on the columns before it is below this
# fraction of its own is taken as a linear combination of them: the system is rank-deficient.
_COLLINEAR = 1e-10
# Eigenvalues below this fraction of the largest (per feature: rounding in the sums grows
# with their number) count as zero in the minimum-norm solution.
_RANK_RTOL_PER_FEATURE = 64 * torch.finfo(torch.float64).eps


def shifts_of(X: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    """The shifts for ``linreg_gram``: means of the first rows of X (n, d) and y (n, k), float64,
    rounded to float32 for narrower data (whose rows the op then shifts with float32 subtractions)."""
    shifts = X[:_SHIFT_ROWS].double().mean(dim=0), y[:_SHIFT_ROWS].double().mean(dim=0)
    if X.dtype == torch.float64:
        return shifts
    return tuple(shift.float().double() for shift in shifts)  # type: ignore[return-value]


@dataclass
class GramSums:
    """The running sums of the normal equations and the shifts they were taken about."""

    gram: Tensor
    x_shift: Tensor
    y_shift: Tensor
    rows: int = 0

    @classmethod
    def empty(cls, x_shift: Tensor, y_shift: Tensor) -> GramSums:
        size = x_shift.numel() + y_shift.numel() + 1
        return cls(torch.zeros((size, size), dtype=torch.float64, device=x_shift.device), x_shift, y_shift)

    def add(self, X: Tensor, y: Tensor, sample_weight: Tensor | None) -> None:
        """Adds the sums of rows ``X`` (n, d) and ``y`` (n, k)."""
        self.gram += torch.ops.fused_linreg.linreg_gram(X, y, sample_weight, self.x_shift, self.y_shift)
        self.rows += X.shape[0]

    def all_reduce(self) -> None:
        """Sums over the ranks of the default ``torch.distributed`` group (their shifts must be equal)."""
        rows = torch.tensor([float(self.rows)], dtype=torch.float64, device=self.gram.device)
        torch.distributed.all_reduce(self.gram)
        torch.distributed.all_reduce(rows)
        self.rows = int(rows.item())


def distributed() -> bool:
    """Whether this process is one rank of an initialised ``torch.distributed`` group of several."""
    return (torch.distributed.is_available() and torch.distributed.is_initialized()
            and torch.distributed.get_world_size() > 1)


def common_shifts(x_shift: Tensor, y_shift: Tensor) -> tuple[Tensor, Tensor]:
    """Rank 0's shifts on every rank (any shift near the data is good; all ranks need one)."""
    both = torch.cat([x_shift, y_shift])
    torch.distributed.broadcast(both, src=0)
    return both[: x_shift.numel()], both[x_shift.numel():]


def solve(sums: GramSums, weight_decay: float) -> tuple[Tensor, Tensor, float]:
    """``(coef (k, d), intercept (k,), loss)`` in float64: the minimiser of the module's problem
    and its data term, the mean over rows of ``0.5 * w * squared error`` (the SGD solver's epoch
    loss, which leaves the penalty out too).

    Cholesky where the centred system is positive definite; otherwise (collinear or constant
    columns, fewer rows than features) the minimum-norm solution, which is scikit-learn's."""
    d, k = sums.x_shift.numel(), sums.y_shift.numel()
    G = sums.gram
    total = G[-1, -1]
    if not total > 0:
        raise ValueError(f"{NAME}: sample_weight sums to zero: at least one sample needs a positive weight")
    # The problem's penalty relative to the weighted mean (1 / W) the moments below are taken over.
    lam = weight_decay * sums.rows / float(total)
    z_mean, u_mean = G[:d, -1] / total, G[d : d + k, -1] / total
    # Centred second moments (covariances), symmetrised: the BLAS computes G[i, j] and G[j, i] apart.
    cov_xx = G[:d, :d] / total - torch.outer(z_mean, z_mean)
    cov_xx = (cov_xx + cov_xx.T) / 2
    cov_xy = G[:d, d : d + k] / total - torch.outer(z_mean, u_mean)
    var_y = torch.diagonal(G[d : d + k, d : d + k]) / total - u_mean * u_mean
    x_mean, y_mean = sums.x_shift + z_mean, sums.y_shift + u_mean
    # With the intercept penalised too: intercept = (y_mean - coef x_mean) / (1 + lam), and the
    # coefficients solve (cov_xx + lam I + c x_mean x_mean^T) coef^T = cov_xy + c x_mean y_mean^T.
    c = lam / (1.0 + lam)
    A = cov_xx + lam * torch.eye(d, dtype=G.dtype, device=G.device) + c * torch.outer(x_mean, x_mean)
    B = cov_xy + c * torch.outer(x_mean, y_mean)
    coef_t = _solve_symmetric(A, B)
    intercept = (y_mean - x_mean @ coef_t) / (1.0 + lam)
    coef = coef_t.T.contiguous()
    # The weighted mean squared residual, from the same moments, then the problem's loss.
    residual = var_y - 2 * (coef_t * cov_xy).sum(0) + ((cov_xx @ coef_t) * coef_t).sum(0)
    offset = y_mean - x_mean @ coef_t - intercept  # zero without weight decay
    mean_squared = float((residual + offset * offset).clamp_min(0).sum())
    loss = 0.5 * mean_squared * float(total) / sums.rows
    return coef, intercept, loss


def _solve_symmetric(A: Tensor, B: Tensor) -> Tensor:
    """``A^-1 B`` for a symmetric positive semi-definite ``A``: by Cholesky when no column is
    (nearly) a combination of the others, else the minimum-norm least-squares solution.

    Solved on the CPU by numpy's LAPACK, whatever the device: the system is small (d x d), and
    torch's CPU LAPACK calls open a parallel region each (0.1 ms, and milliseconds on a busy
    machine), more than the whole pass over X takes for small data."""
    A_np, B_np = A.cpu().numpy(), B.cpu().numpy()
    if A_np.size == 0:
        return B.new_zeros(B.shape)
    try:
        L = np.linalg.cholesky(A_np)
    except np.linalg.LinAlgError:
        L = None
    if L is not None and bool((np.diagonal(L) ** 2 > _COLLINEAR * np.diagonal(A_np)).all()):
        solution = np.linalg.solve(L.T, np.linalg.solve(L, B_np))
    else:
        solution = np.linalg.pinv(A_np, rcond=_RANK_RTOL_PER_FEATURE * A_np.shape[0], hermitian=True) @ B_np
    return torch.from_numpy(solution).to(B.device)
