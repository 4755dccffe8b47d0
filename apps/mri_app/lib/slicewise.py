"""Slice-wise inference of 2D networks on 2D images and on volumes."""

from typing import Optional, Sequence

import torch
import torch.nn.functional as F
from monai.inferers import Inferer


def channels_last_on_cpu(network) -> bool:
    """Put a CPU network's 4D weights in channels-last memory order (once; later calls only check), and say
    whether its input batches should follow. oneDNN's 2D convolutions run faster on that layout on the CPU
    (measured on this app's networks: about 1.2x for the ResUNet, 1.4-1.5x for the ResNet classifiers); the
    results agree with the default layout to float rounding (~1e-6). CUDA networks and anything that is not a
    ``torch.nn.Module`` with 4D parameters are left alone (False).
    """
    if not isinstance(network, torch.nn.Module):
        return False
    weights = [p for p in network.parameters() if p.dim() == 4]
    if not weights or any(p.device.type != "cpu" for p in weights):
        return False
    if not all(p.is_contiguous(memory_format=torch.channels_last) for p in weights):
        network.to(memory_format=torch.channels_last)
    return True


class SlicewiseInferer(Inferer):
    """Run a 2D network on every axial slice (or a chosen subset) in batches.

    Args:
        size: side ``S`` of the network input; each slice is resized to ``(S, S)`` (bilinear).
        axis: voxel axis (0, 1, 2) of the slices of a volume; ignored for 2D input.
        segmentation: True: the network returns ``(N, K, S, S)`` logits, resized back to the slice size.
            False: the network returns ``(N, K)`` class logits.
        slices: indices of the slices to run (a 2D image is slice 0); the others get background
            (segmentation) or are left out (classification). None runs all.
        batch_size: slices per forward pass.

    Returns (from ``__call__(inputs, network)`` with ``inputs`` of shape ``(1, C, H, W)`` or ``(1, C, H, W, D)``):
        segmentation: logits ``(1, K, H, W)`` or ``(1, K, H, W, D)``;
        classification: logits ``(1, N, K)`` for the ``N`` slices run, in increasing slice order.
    """

    def __init__(
        self,
        size: int,
        axis: int = 2,
        segmentation: bool = True,
        slices: Optional[Sequence[int]] = None,
        batch_size: int = 32,
    ):
        super().__init__()
        if size < 8:
            raise ValueError(f"size must be >= 8 pixels, got {size}")
        if axis not in (0, 1, 2):
            raise ValueError(f"axis must be 0, 1 or 2, got {axis}")
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.size = int(size)
        self.axis = axis
        self.segmentation = segmentation
        self.slices = None if slices is None else sorted({int(s) for s in slices})
        self.batch_size = batch_size

    def chosen(self, depth: int) -> list:
        """The slices run of a volume of ``depth`` slices (``slices`` inside it, or all), in increasing order."""
        return list(range(depth)) if self.slices is None else [s for s in self.slices if 0 <= s < depth]

    def __call__(self, inputs: torch.Tensor, network, *args, **kwargs) -> torch.Tensor:
        if inputs.ndim not in (4, 5) or inputs.shape[0] != 1:
            raise ValueError(f"inputs must have shape (1, C, H, W) or (1, C, H, W, D), got {tuple(inputs.shape)}")
        is_2d = inputs.ndim == 4
        volume = inputs[..., None] if is_2d else inputs.movedim(self.axis + 2, -1)
        stack = volume[0].movedim(-1, 0)  # (D, C, H, W)
        depth, height, width = stack.shape[0], stack.shape[2], stack.shape[3]
        chosen = self.chosen(depth)

        channels_last = channels_last_on_cpu(network)
        outputs = []
        for start in range(0, len(chosen), self.batch_size):
            batch = stack[chosen[start : start + self.batch_size]].as_subclass(torch.Tensor)
            if (height, width) != (self.size, self.size):  # bilinear to the same size is the identity: skip it
                batch = F.interpolate(batch, size=(self.size, self.size), mode="bilinear")
            if channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            logits = network(batch)
            if self.segmentation and tuple(logits.shape[-2:]) != (height, width):
                logits = F.interpolate(logits, size=(height, width), mode="bilinear")
            outputs.append(logits)

        if not self.segmentation:
            return torch.cat(outputs)[None] if outputs else inputs.new_zeros((1, 0, 0))

        channels = outputs[0].shape[1] if outputs else 2
        result = inputs.new_zeros((depth, channels, height, width)).as_subclass(torch.Tensor)
        result[:, 0] = 1.0  # background wherever no slice was run
        if outputs:
            result[chosen] = torch.cat(outputs)
        result = result.movedim(0, -1)[None]  # (1, K, H, W, D)
        return result[..., 0] if is_2d else result.movedim(-1, self.axis + 2)


class SliceScoreInferer(Inferer):
    """Per-slice probability of foreground from a 2D segmentation network: for each slice run, the mean of the
    ``area_fraction`` × H × W (at least 1) highest foreground probabilities (1 − p(background)) of that slice,
    i.e. about "at least that area is foreground". A lone uncertain pixel does not make a slice positive; a
    lesion of that area does.

    Args:
        size, axis, slices, batch_size: as :class:`SlicewiseInferer` (segmentation).
        area_fraction: 0 < f <= 1, fraction of the slice's pixels whose probabilities are averaged.

    Returns (from ``__call__(inputs, network)``): log-probabilities ``(1, N, 2)`` (background, foreground) of the
    ``N`` slices run, in increasing slice order, so that a softmax over the last axis gives the probabilities.
    The call also keeps ``foreground``: the foreground probability ``(H, W)`` or ``(H, W, D)`` in the input's
    grid (0 on the slices not run), the map the scores come from.
    """

    def __init__(
        self,
        size: int,
        area_fraction: float,
        axis: int = 2,
        slices: Optional[Sequence[int]] = None,
        batch_size: int = 32,
    ):
        super().__init__()
        if not 0.0 < area_fraction <= 1.0:
            raise ValueError(f"area_fraction must be in (0, 1], got {area_fraction}")
        self.area_fraction = float(area_fraction)
        self.segmenter = SlicewiseInferer(size, axis=axis, segmentation=True, slices=slices, batch_size=batch_size)

    def __call__(self, inputs: torch.Tensor, network, *args, **kwargs) -> torch.Tensor:
        logits = self.segmenter(inputs, network)
        is_2d = inputs.ndim == 4
        foreground = 1.0 - torch.softmax(logits.float(), dim=1)[0, 0]  # (H, W) or (H, W, D)
        stack = foreground[..., None] if is_2d else foreground.movedim(self.segmenter.axis, -1)
        depth = stack.shape[-1]
        chosen = [0] if is_2d else self.segmenter.chosen(depth)
        run = torch.zeros(depth, dtype=torch.bool, device=stack.device)
        run[chosen] = True
        shown = stack * run  # the slices not run: 0, not the softmax of their placeholder logits
        self.foreground = (shown[..., 0] if is_2d else shown.movedim(-1, self.segmenter.axis)).detach().cpu()
        if not chosen:
            return inputs.new_zeros((1, 0, 2)).as_subclass(torch.Tensor)
        per_slice = stack[..., chosen].reshape(-1, len(chosen)).T  # (N, H*W)
        k = max(1, int(round(self.area_fraction * per_slice.shape[1])))
        score = per_slice.topk(k, dim=1).values.mean(dim=1).clamp(1e-6, 1 - 1e-6)
        return torch.stack([torch.log1p(-score), torch.log(score)], dim=1)[None]
