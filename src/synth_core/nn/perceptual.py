"""Image distances for Bi-DPM's paired loss: L1 + SSIM (the default) and LPIPS.

The paper measures the distance between the forward and backward states with LPIPS
(Zhang et al. 2018), which needs ImageNet-trained VGG16 weights. Those cannot be
downloaded on an offline cluster node, and a default that silently fetched them would
break there; so the default is a weight-free distance, ``(1 - a) L1 + a (1 - SSIM)``,
and LPIPS runs when the user points to local VGG16 weights (``lpips_weights``).

LPIPS here follows the paper's eq. 7: features of layers l of a frozen network,
unit-normalised along channels, squared differences weighted per channel by w_l,
averaged over positions and summed over layers. Greyscale slices are repeated to three
channels after the ImageNet shift and scale of LPIPS's ``ScalingLayer``; 3D volumes are
measured slice by slice (axial) because the network is 2D. Without the LPIPS
calibration (``lin`` layers) w_l is 1, the "baseline" variant of Zhang et al.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F
from torchmetrics.functional.image import structural_similarity_index_measure

from synth_core.errors import UserError

# VGG16's convolution widths, "M" = max pool (Simonyan & Zisserman 2014, configuration D).
_VGG16 = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512)
# Indices (in torchvision's ``features`` numbering) of the ReLUs LPIPS reads:
# relu1_2, relu2_2, relu3_3, relu4_3, relu5_3.
_VGG16_TAPS = (3, 8, 15, 22, 29)
# LPIPS's ScalingLayer: ImageNet statistics expressed for inputs in [-1, 1].
_SHIFT = (-0.030, -0.088, -0.188)
_SCALE = (0.458, 0.448, 0.450)


def l1_ssim(a: torch.Tensor, b: torch.Tensor, ssim_weight: float = 0.5,
            data_range: float = 2.0) -> torch.Tensor:
    """``(1 - w) * L1 + w * (1 - SSIM)`` between batches ``a`` and ``b`` of shape
    (B, C, *S), 2D or 3D; SSIM is torchmetrics' (Gaussian window 11, sigma 1.5, Wang et al.'s
    setting; a smaller odd window on inputs under 11 voxels), differentiable."""
    loss = (1.0 - ssim_weight) * F.l1_loss(a, b)
    if ssim_weight > 0:
        kernel = min(11, *[s if s % 2 else s - 1 for s in a.shape[2:]])
        ssim = structural_similarity_index_measure(a, b, data_range=data_range,
                                                   kernel_size=kernel, sigma=1.5 * kernel / 11)
        loss = loss + ssim_weight * (1.0 - ssim)  # type: ignore[operator]
    return loss


class FeatureTaps(nn.Module):
    """A sequential network whose activations after the given layer indices are returned."""

    def __init__(self, layers: nn.Sequential, taps: Sequence[int]) -> None:
        super().__init__()
        self.layers = layers
        self.taps = tuple(taps)

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        out = []
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i in self.taps:
                out.append(x)
            if i >= self.taps[-1]:
                break
        return out


def vgg16_features() -> FeatureTaps:
    """VGG16's convolutional part, laid out as torchvision's ``vgg16().features`` so its
    state dict (``features.<i>.weight``) loads directly."""
    layers: list[nn.Module] = []
    c = 3
    for item in _VGG16:
        if item == "M":
            layers.append(nn.MaxPool2d(2, 2))
        else:
            layers += [nn.Conv2d(c, int(item), 3, padding=1), nn.ReLU(inplace=False)]
            c = int(item)
    return FeatureTaps(nn.Sequential(*layers), _VGG16_TAPS)


class LPIPS(nn.Module):
    """Learned perceptual distance with a frozen feature network (eq. 7 of the Bi-DPM paper).

    Args:
        features: returns a list of feature maps for a (B, 3, H, W) input.
        channel_weights: one non-negative weight vector per tapped layer (LPIPS's ``lin``
            layers); None = ones.
    """

    def __init__(self, features: nn.Module, channel_weights: Sequence[torch.Tensor] | None = None) -> None:
        super().__init__()
        self.features = features.eval().requires_grad_(False)
        self.register_buffer("shift", torch.tensor(_SHIFT).view(1, 3, 1, 1))
        self.register_buffer("scale", torch.tensor(_SCALE).view(1, 3, 1, 1))
        self.channel_weights = [w.detach().flatten() for w in channel_weights] if channel_weights else None

    def train(self, mode: bool = True) -> LPIPS:
        super().train(mode)
        self.features.eval()  # frozen: never leave evaluation mode
        return self

    def _prepare(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 5:  # (B, C, X, Y, Z) -> axial slices (B * Z, C, X, Y)
            x = x.permute(0, 4, 1, 2, 3).flatten(0, 1)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.shift) / self.scale

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """Mean LPIPS distance between the batches ``a`` and ``b`` (B, C, *S)."""
        fa, fb = self.features(self._prepare(a)), self.features(self._prepare(b))
        total = a.new_zeros(())
        for i, (xa, xb) in enumerate(zip(fa, fb, strict=True)):
            xa = xa / (xa.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            xb = xb / (xb.pow(2).sum(1, keepdim=True).sqrt() + 1e-10)
            diff = (xa - xb).pow(2)
            if self.channel_weights is not None:
                diff = diff * self.channel_weights[i].to(diff).view(1, -1, 1, 1)
            total = total + diff.sum(1).mean()
        return total


def _read_tensors(path: Path) -> dict[str, torch.Tensor]:
    """A state dict from safetensors, or from a PyTorch file with ``weights_only=True``
    (a pickle can never run code here)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return load_file(str(path))
    try:
        data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - the unpickler's refusal is the message
        raise UserError(f"{path} is not a plain tensor file that can be loaded safely ({exc}); "
                        "convert it to safetensors") from None
    if isinstance(data, dict) and "state_dict" in data and isinstance(data["state_dict"], dict):
        data = data["state_dict"]
    if not isinstance(data, dict):
        raise UserError(f"{path} holds no state dict of tensors; give VGG16 weights")
    return data


def load_lpips(vgg_weights: str | Path, lin_weights: str | Path | None = None) -> LPIPS:
    """LPIPS-VGG from local files: ``vgg_weights`` is a torchvision VGG16 state dict
    (``features.<i>.weight`` keys, or the full model's), ``lin_weights`` optionally the
    LPIPS calibration (``lin<k>.model.1.weight`` keys)."""
    path = Path(vgg_weights).expanduser()
    if not path.is_file():
        raise UserError(f"LPIPS needs local VGG16 weights: {path} does not exist; give the "
                        "path of vgg16 weights (safetensors or .pth) or use distance l1-ssim")
    state = _read_tensors(path)
    state = {k.removeprefix("features."): v for k, v in state.items() if not k.startswith("classifier.")}
    net = vgg16_features()
    try:
        missing = net.layers.load_state_dict(state, strict=False).missing_keys
    except RuntimeError as exc:  # tensors of the wrong shape
        raise UserError(f"{path} is not a VGG16 state dict ({str(exc).splitlines()[-1].strip()}); "
                        "give torchvision's vgg16 weights") from None
    if missing:
        raise UserError(f"{path} is not a VGG16 state dict (missing {missing[:3]}...); give "
                        "torchvision's vgg16 weights")
    weights = None
    if lin_weights is not None:
        lin = _read_tensors(Path(lin_weights).expanduser())
        try:
            weights = [lin[f"lin{k}.model.1.weight"] for k in range(len(_VGG16_TAPS))]
        except KeyError as exc:
            raise UserError(f"{lin_weights} lacks the LPIPS layer {exc}; give LPIPS's vgg.pth") from None
    return LPIPS(net, weights)
