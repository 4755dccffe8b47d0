"""Networks of every task, from ``monai.networks.nets``, described by a JSON-able spec.

A spec ``{"name": "UNet", "args": {...}}`` is what ``model.json`` stores beside a checkpoint, so a
checkpoint can be rebuilt without this code's defaults: :func:`build_network` accepts only the names below.

:func:`pretrained_classifier` and :func:`load_pretrained` start a slice classifier from a ResNet state dict on
disk (torchvision ``resnet18``/``resnet34`` or a MONAI ``ResNet`` with basic blocks; both use the same parameter
names: ``conv1``, ``bn1``, ``layer1.0.conv1``, ..., ``fc``).
"""

import re
from pathlib import Path
from typing import Any, Dict, Optional, Sequence

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


def slice_classifier(
    num_classes: int,
    widths: Sequence[int],
    layers: Sequence[int] = (2, 2, 2, 2),
    bias_downsample: Optional[bool] = None,
    stem_stride: int = 2,
) -> Dict:
    """2D ResNet-18 layout with ``widths`` channels per stage; input ``(N, 1, S, S)``, output ``(N, K)`` logits.

    Args:
        stem_stride: stride of the 7x7 first convolution. 2 (torchvision's ResNet, the default) puts the first stage
            at ``S / 4`` pixels; MONAI's default 1 keeps it at ``S / 2`` for about four times the compute per slice
            (0.88 GFLOP at 128 px with the default widths) for no measured gain at these input sizes.
        layers: basic blocks per stage (ResNet-18: 2, 2, 2, 2; ResNet-34: 3, 4, 6, 3).
        bias_downsample: whether the shortcut convolutions carry a bias (MONAI's default, True) or not
            (torchvision's layout, False); None leaves MONAI's default out of the spec.
    """
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    if len(widths) != 4:
        raise ValueError(f"widths must hold 4 stage widths, got {list(widths)}")
    if len(layers) != 4 or any(int(n) < 1 for n in layers):
        raise ValueError(f"layers must hold 4 positive block counts, got {list(layers)}")
    if stem_stride not in (1, 2):
        raise ValueError(f"stem_stride must be 1 or 2, got {stem_stride}")
    spec: Dict[str, Any] = {
        "name": "ResNet",
        "args": {
            "block": "basic",
            "layers": [int(n) for n in layers],
            "block_inplanes": list(widths),
            "spatial_dims": 2,
            "n_input_channels": 1,
            "num_classes": num_classes,
            "conv1_t_stride": int(stem_stride),
        },
    }
    if bias_downsample is not None:
        spec["args"]["bias_downsample"] = bool(bias_downsample)
    return spec


def read_state_dict(path) -> Dict[str, torch.Tensor]:
    """The tensors of a state dict file: a plain ``state_dict()`` as torchvision or MONAI save it, or one
    wrapped as ``{"model": ...}`` / ``{"state_dict": ...}``; a ``module.`` prefix (DataParallel) is removed.

    Raises:
        ValueError: the file is missing, unreadable or holds no state dict (the message names the file).
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as error:  # pickle, zip or torch errors of a foreign or truncated file
        raise ValueError(f"{path}: not a readable PyTorch state dict ({error})") from None
    for key in ("model", "state_dict"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: holds no state dict (a mapping of parameter names to tensors)")
    return {(k[len("module.") :] if k.startswith("module.") else k): v for k, v in state.items()}


def pretrained_layout(state: Dict[str, torch.Tensor], path="the state dict") -> Dict:
    """Stage widths, blocks per stage and shortcut bias of a 2D basic-block ResNet state dict.

    Raises:
        ValueError: not a 2D basic-block ResNet (e.g. a bottleneck ResNet-50, or a 3D network).
    """
    if any(re.match(r"layer\d+\.\d+\.conv3\.", k) for k in state):
        raise ValueError(f"{path}: bottleneck ResNet (ResNet-50 and deeper); only basic-block ResNets (18/34) fit")
    widths, layers = [], []
    for stage in range(1, 5):
        key = f"layer{stage}.0.conv1.weight"
        if key not in state or state[key].ndim != 4:
            raise ValueError(f"{path}: not a 2D ResNet state dict ({key} missing or not a 2D convolution)")
        widths.append(int(state[key].shape[0]))
        blocks = {int(m[1]) for k in state for m in [re.match(rf"layer{stage}\.(\d+)\.", k)] if m}
        layers.append(max(blocks) + 1)
    return {"widths": widths, "layers": layers, "bias_downsample": any(k.endswith("downsample.0.bias") for k in state)}


def pretrained_classifier(num_classes: int, path) -> Dict:
    """Spec of a slice classifier whose layout fits the ResNet state dict at ``path`` (widths, blocks and
    shortcut bias read from its shapes), to be started from it with :func:`load_pretrained`."""
    layout = pretrained_layout(read_state_dict(path), path)
    return slice_classifier(num_classes, layout["widths"], layout["layers"], layout["bias_downsample"])


def load_pretrained(network: torch.nn.Module, path) -> Dict:
    """Load the ResNet state dict at ``path`` into a slice classifier, in place.

    ``conv1`` is adapted from 3 input channels (RGB) to the network's 1 by summing over the channel axis (the
    answer to a grey picture is then the same as to that picture in all three channels); ``fc`` is left out
    when its class count differs (it keeps its fresh initialisation); everything else must match by name and
    shape.

    Returns:
        ``{"path", "loaded": number of tensors, "adapted": [...], "dropped": [...]}``.

    Raises:
        ValueError: unreadable file, or parameters missing, unexpected or of the wrong shape (named).
    """
    state = read_state_dict(path)
    own = network.state_dict()
    adapted, dropped = [], []
    weight = state.get("conv1.weight")
    target = own.get("conv1.weight")
    if weight is not None and target is not None and weight.ndim == target.ndim == 4:
        if weight.shape[1] != target.shape[1] and target.shape[1] == 1:
            state["conv1.weight"] = weight.sum(dim=1, keepdim=True)
            adapted.append(f"conv1.weight: {weight.shape[1]} input channels summed to 1")
    for key in ("fc.weight", "fc.bias"):
        if key in state and key in own and state[key].shape != own[key].shape:
            dropped.append(f"{key} {tuple(state.pop(key).shape)} (class count differs from {own[key].shape[0]})")
    missing = [k for k in own if k not in state and not k.startswith("fc.")]
    unexpected = [k for k in state if k not in own]
    wrong = [
        f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}"
        for k in state
        if k in own and state[k].shape != own[k].shape
    ]
    if missing or unexpected or wrong:
        problems = "; ".join(
            f"{what}: {', '.join(names[:6])}{' ...' if len(names) > 6 else ''}"
            for what, names in (("missing", missing), ("unexpected", unexpected), ("shape file vs network", wrong))
            if names
        )
        raise ValueError(f"{path}: does not fit the network ({problems})")
    network.load_state_dict(state, strict=False)
    return {"path": str(path), "loaded": len(state), "adapted": adapted, "dropped": dropped}


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
