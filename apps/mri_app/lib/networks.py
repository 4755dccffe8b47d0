"""Networks of every task, from ``monai.networks.nets``, described by a JSON-able spec.

A spec ``{"name": "UNet", "args": {...}}`` is what ``model.json`` stores beside a checkpoint, so a
checkpoint can be rebuilt without this code's defaults: :func:`build_network` accepts only the names below.
"""

from typing import Dict, Sequence

import torch
from monai.networks.nets import ResNet, UNet

_NETWORKS = {"ResNet": ResNet, "UNet": UNet}


def build_network(spec: Dict) -> torch.nn.Module:
    """Instantiate the network a spec describes.

    Raises:
        ValueError: the spec names a network that is not one of ours.
    """
    name = spec.get("name")
    if name not in _NETWORKS:
        raise ValueError(f"network name must be one of {sorted(_NETWORKS)}, got {name!r}")
    return _NETWORKS[name](**spec.get("args", {}))


def slice_classifier(num_classes: int, widths: Sequence[int]) -> Dict:
    """2D ResNet-18 layout with ``widths`` channels per stage; input ``(N, 1, S, S)``, output ``(N, K)`` logits."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if len(widths) != 4:
        raise ValueError(f"widths must hold 4 stage widths, got {list(widths)}")
    return {
        "name": "ResNet",
        "args": {
            "block": "basic",
            "layers": [2, 2, 2, 2],
            "block_inplanes": list(widths),
            "spatial_dims": 2,
            "n_input_channels": 1,
            "num_classes": num_classes,
        },
    }


def residual_unet(spatial_dims: int, num_classes: int, widths: Sequence[int], dropout: float = 0.1) -> Dict:
    """U-Net whose encoder and decoder blocks are residual units (a ResUNet): ``(N, 1, *S) -> (N, K, *S)``.

    Args:
        spatial_dims: 2 for slices, 3 for volumes.
        num_classes: output channels including background.
        widths: channels per level; inputs must be divisible by ``2 ** (len(widths) - 1)`` voxels.
        dropout: dropout probability inside the residual units (0..1).
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2 (background included), got {num_classes}")
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if len(widths) < 3:
        raise ValueError(f"widths must hold at least 3 levels, got {list(widths)}")
    return {
        "name": "UNet",
        "args": {
            "spatial_dims": spatial_dims,
            "in_channels": 1,
            "out_channels": num_classes,
            "channels": list(widths),
            "strides": [2] * (len(widths) - 1),
            "num_res_units": 2,
            "norm": "batch",
            "dropout": dropout,
        },
    }
