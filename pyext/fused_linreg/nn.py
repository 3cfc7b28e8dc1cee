"""Drop-in modules: ``Linear``, ``MSELoss`` and the book's ``SquaredLoss``.

``Linear`` and ``MSELoss`` subclass their ``torch.nn`` counterparts, so construction,
initialisation, parameters, ``state_dict`` and ``isinstance`` checks are unchanged;
only ``forward`` runs the fused operators.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.modules.loss import _Loss

from .functional import linear, mse_loss, squared_loss

__all__ = ["Linear", "MSELoss", "SquaredLoss"]


class Linear(torch.nn.Linear):
    """``torch.nn.Linear`` (same arguments, init and state_dict) computed by ``fused_linreg.linear``.

    Shapes: input ``(*, in_features)`` -> output ``(*, out_features)``; ``weight`` is
    ``(out_features, in_features)`` and ``bias`` ``(out_features,)``.
    """

    def forward(self, input: Tensor) -> Tensor:
        return linear(input, self.weight, self.bias)


class MSELoss(torch.nn.MSELoss):
    """``torch.nn.MSELoss`` (same arguments, default ``reduction="mean"``) computed by
    ``fused_linreg.mse_loss``.

    Shapes: input and target ``S`` -> a 0-dim loss, or ``S`` for ``reduction="none"``.
    """

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return mse_loss(input, target, reduction=self.reduction)


class SquaredLoss(_Loss):
    """The book's squared loss ``(input - target.reshape(input.shape)) ** 2 / 2``.

    Shapes: input ``S``, target with ``S``'s element count -> ``S`` for
    ``reduction="none"`` (the default, as in the book), a 0-dim loss for ``"sum"``/``"mean"``.
    """

    def __init__(self, reduction: str = "none") -> None:
        super().__init__(reduction=reduction)

    def forward(self, input: Tensor, target: Tensor) -> Tensor:
        return squared_loss(input, target, reduction=self.reduction)
