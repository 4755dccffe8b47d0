"""Class-activation maps of the slice classifiers, as volumes aligned with the input (``monai.visualize``)."""

from typing import Sequence

import torch
import torch.nn.functional as F
from monai.visualize import GradCAM


def cam_volume(
    network: torch.nn.Module,
    image: torch.Tensor,
    axis: int,
    slices: Sequence[int],
    size: int,
    class_index: int,
    target_layer: str = "layer4",
) -> torch.Tensor:
    """Grad-CAM of ``class_index`` on the given slices, pasted back into the input grid.

    Args:
        network: the classifier (a MONAI ResNet; ``target_layer`` names its last stage).
        image: normalised input ``(1, H, W)`` (a 2D picture) or ``(1, H, W, D)`` (a volume).
        axis: voxel axis of the slices of a volume.
        slices: slice indices the classifier ran on (``[0]`` for a picture); other slices stay 0.
        size: network input side ``S`` (pixels).
        class_index: class whose evidence is mapped.

    Returns:
        ``(H, W)`` or ``(H, W, D)`` float map in [0, 1] (each slice normalised by Grad-CAM itself).
    """
    is_2d = image.ndim == 3
    volume = image[..., None] if is_2d else image.movedim(axis + 1, -1)
    stack = volume.movedim(-1, 0).as_subclass(torch.Tensor).float()  # (D, 1, H, W)
    height, width = stack.shape[-2:]
    result = torch.zeros((stack.shape[0], height, width))
    chosen = [s for s in slices if 0 <= s < stack.shape[0]]
    if chosen:
        inputs = F.interpolate(stack[chosen], size=(size, size), mode="bilinear")
        was_training = network.training
        network.eval()
        with torch.enable_grad():
            maps = GradCAM(nn_module=network, target_layers=target_layer)(inputs, class_idx=class_index)
        network.train(was_training)
        result[chosen] = F.interpolate(maps.detach().float().cpu(), size=(height, width), mode="bilinear")[:, 0]
    result = result.movedim(0, -1)  # (H, W, D)
    return result[..., 0] if is_2d else result.movedim(-1, axis)
