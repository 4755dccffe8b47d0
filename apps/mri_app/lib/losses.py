"""Losses not in MONAI as such, built on MONAI's own."""

import torch
from monai.losses import TverskyLoss


class FocalTverskyLoss(torch.nn.Module):
    """Focal Tversky loss (Abraham & Khan, 2019): ``(1 - TI) ** gamma``, averaged over classes.

    ``TI`` is MONAI's Tversky index; ``alpha`` weighs false positives and ``beta`` false negatives
    (``beta > alpha`` favours recall of small lesions); ``gamma < 1`` focuses on hard, poorly segmented
    cases. Inputs: logits ``(N, K, *S)`` and integer labels ``(N, 1, *S)``.

    ``batch=True`` (the default) sums true/false positives and negatives over the whole batch before the index
    is formed, as one image: a healthy item (empty truth) then still contributes its false positives. Per item
    (``batch=False``) an empty truth gives ``TI = 0`` whatever the prediction, a constant loss of 1 whose
    gradient vanishes, so the network never learns to leave healthy slices empty.
    """

    def __init__(
        self,
        alpha: float = 0.3,
        beta: float = 0.7,
        gamma: float = 0.75,
        include_background: bool = False,
        batch: bool = True,
    ):
        super().__init__()
        for name, value in (("alpha", alpha), ("beta", beta), ("gamma", gamma)):
            if value <= 0:
                raise ValueError(f"{name} must be > 0, got {value}")
        self.gamma = gamma
        self.tversky = TverskyLoss(
            include_background=include_background,
            to_onehot_y=True,
            softmax=True,
            alpha=alpha,
            beta=beta,
            reduction="none",
            batch=batch,
        )

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.tversky(logits, target).clamp_min(0).pow(self.gamma).mean()


class FocalTverskyCELoss(torch.nn.Module):
    """Batch focal Tversky (:class:`FocalTverskyLoss`) plus ``ce_weight`` times pixel-wise cross-entropy.

    The cross-entropy term scores every pixel on its own, so false positives on healthy slices cost the same as
    anywhere else; the Tversky term keeps small lesions from being drowned by the background. Inputs: logits
    ``(N, K, *S)`` and integer labels ``(N, 1, *S)``; output a scalar.
    """

    def __init__(self, ce_weight: float = 1.0, **tversky):
        super().__init__()
        if ce_weight < 0:
            raise ValueError(f"ce_weight must be >= 0, got {ce_weight}")
        self.ce_weight = float(ce_weight)
        self.tversky = FocalTverskyLoss(**tversky)
        self.ce = torch.nn.CrossEntropyLoss()

    def forward(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        loss = self.tversky(logits, target)
        if self.ce_weight:
            loss = loss + self.ce_weight * self.ce(logits, target[:, 0].long())
        return loss
