"""Test-time mirroring: average a network's softmax over mirrored copies of its input (nnU-Net's mirroring).

A task that trains with random mirrors along some axes (``flip_axes`` of its config) is served with the
average over every combination of those mirrors, each prediction mirrored back. A classifier whose config declares
``test_time_mirroring`` (chosen on validation) averages its class probabilities over the image and its left-right
mirror, the flip its training augmentation applies.
"""

from itertools import combinations
from typing import Any, Callable, List, Sequence, Tuple

import torch
from monai.inferers import Inferer, SlidingWindowInferer


def mirror_sets(flip_axes: Sequence[int]) -> List[Tuple[int, ...]]:
    """Every combination of ``flip_axes`` (spatial axes, 0-based), the identity ``()`` first.

    Raises:
        ValueError: an axis is not 0, 1 or 2, or repeats.
    """
    axes = [int(a) for a in flip_axes]
    if any(a not in (0, 1, 2) for a in axes) or len(set(axes)) != len(axes):
        raise ValueError(f"flip_axes must be distinct spatial axes among 0, 1, 2, got {list(flip_axes)}")
    return [combo for k in range(len(axes) + 1) for combo in combinations(axes, k)]


class MirrorAveragingInferer(Inferer):
    """Runs ``inner`` on the input and on its mirrors along every combination of ``flip_axes``; answers the log of
    the mean softmax, so that callers' softmax (and argmax) of the answer give exactly the averaged probabilities.

    Args:
        inner: the inferer of one pass (e.g. ``SlidingWindowInferer``).
        flip_axes: spatial axes (0..2) of a ``(B, C, H, W[, D])`` input; empty = ``inner`` alone, unchanged.
        segmentation: True: ``inner`` answers logits ``(B, K, *spatial)``, each mirrored back before the mean.
            False: class logits with the classes last (e.g. ``(1, N, K)`` of a slice-wise classifier), averaged as
            they come.
    """

    def __init__(self, inner: Inferer, flip_axes: Sequence[int], segmentation: bool = True):
        super().__init__()
        self.inner = inner
        self.mirrors = mirror_sets(flip_axes)
        self.segmentation = segmentation

    def __call__(self, inputs: torch.Tensor, network: Callable[..., torch.Tensor], *args: Any, **kwargs: Any):
        if len(self.mirrors) == 1:
            return self.inner(inputs, network, *args, **kwargs)
        total = torch.zeros(())
        for axes in self.mirrors:
            dims = [2 + a for a in axes]
            x = torch.flip(inputs, dims) if dims else inputs
            p = torch.softmax(self.inner(x, network, *args, **kwargs), dim=1 if self.segmentation else -1)
            p = torch.flip(p, dims) if dims and self.segmentation else p
            total = total + p
        return torch.log((total / len(self.mirrors)).clamp_min(1e-8))


def volume_inferer(roi: Sequence[int], flip_axes: Sequence[int] = ()) -> MirrorAveragingInferer:
    """Sliding window over ``roi`` patches (Gaussian-weighted, a quarter overlap), averaged over the mirrors along
    ``flip_axes``: what the infer serves and what training validates with."""
    return MirrorAveragingInferer(
        SlidingWindowInferer(roi_size=roi, sw_batch_size=4, overlap=0.25, mode="gaussian"), flip_axes
    )
