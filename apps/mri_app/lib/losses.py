"""Losses not in MONAI as such, built on MONAI's own."""

import torch
from monai.losses import TverskyLoss


class FocalTverskyLoss(torch.nn.Module):
    """Focal Tversky loss (Abraham & Khan, 2019): ``mean((1 - TI) ** gamma)`` over batch and classes.

    ``TI`` is MONAI's Tversky index; ``alpha`` weighs false positives and ``beta`` false negatives
    (``beta > alpha`` favours recall of small lesions); ``gamma < 1`` focuses on hard, poorly segmented
    cases. Inputs: logits ``(N, K, *S)`` and integer labels ``(N, 1, *S)``.
    """

    def __init__(self, alpha: float = 0.3, beta: float = 0.7, gamma: float = 0.75, include_background: bool = False):
        super().__init__()
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.gamma = gamma
        self.tversky = TverskyLoss(
            include_background=include_background, to_onehot_y=True, softmax=True, alpha=alpha, beta=beta, reduction="none"
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.tversky(logits, target).clamp_min(0).pow(self.gamma).mean()
