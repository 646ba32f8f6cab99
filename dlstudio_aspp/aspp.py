"""Atrous spatial pyramid pooling (ASPP) for the mUNet bottleneck.

Branches, each ending in ReLU, are concatenated along channels and projected back:

- a 1x1 conv + BN + ReLU;
- one 3x3 conv + BN + ReLU per dilation rate, with padding equal to the rate so the
  spatial size is kept;
- optionally an image-pooling branch: global average pool, 1x1 conv, ReLU, upsampled
  back to (H, W). This branch has **no BatchNorm**: after pooling each channel holds one
  value per sample, so BN in train mode fails at batch size 1 (torchvision's ASPP does);
  the conv keeps its bias instead.

The projection (1x1 conv + BN + ReLU, optional dropout) takes
``len(branches) * branch_channels`` channels, so any list of rates works.

Shape:
    input (B, C_in, H, W) -> output (B, C_out, H, W)
"""
from __future__ import annotations

import warnings
from typing import Sequence

import torch
from torch import nn
from torch.nn import functional as F

from .errors import UserError
from .spec import DEFAULT_RATES, check_rates


class ASPPConv(nn.Sequential):
    """3x3 conv with dilation ``rate`` (padding = rate) + BN + ReLU."""

    def __init__(self, in_channels: int, out_channels: int, rate: int) -> None:
        super().__init__(
            nn.Conv2d(in_channels, out_channels, 3, padding=rate, dilation=rate, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
        )


class ASPPPooling(nn.Sequential):
    """Global average pool + 1x1 conv (with bias, no BN) + ReLU, upsampled to (H, W)."""

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1), nn.ReLU(inplace=True))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        return F.interpolate(super().forward(x), size=size, mode="nearest")


class ASPP(nn.Module):
    """ASPP block: 1x1, dilated 3x3 per rate, optional image pooling, then a 1x1 projection.

    Args:
        in_channels: channels of the input feature map (128 at mUNet's bottleneck).
        out_channels: channels after the projection; defaults to ``in_channels`` so the
            block drops in between an encoder and a decoder unchanged.
        rates: dilation rates of the 3x3 branches, each an int >= 1. Default (2, 4, 6).
        branch_channels: width of each branch. Default 128.
        image_pooling: add the global-pooling branch. Default True.
        dropout: dropout probability after the projection, in [0, 1). Default 0.

    Raises:
        ValueError: empty ``rates``, a rate < 1 or not an int, a non-positive width, or
            a dropout outside [0, 1).

    Example:
        >>> aspp = ASPP(128, rates=(2, 4, 6))
        >>> y = aspp(torch.randn(1, 128, 8, 8)); y.mean().backward(); tuple(y.shape)
        (1, 128, 8, 8)
    """

    def __init__(self, in_channels: int, out_channels: int | None = None, *, rates: Sequence[int] = DEFAULT_RATES,
                 branch_channels: int = 128, image_pooling: bool = True, dropout: float = 0.0) -> None:
        super().__init__()
        rates = self.check_rates(rates)
        out_channels = in_channels if out_channels is None else out_channels
        for name, v in (("in_channels", in_channels), ("out_channels", out_channels), ("branch_channels", branch_channels)):
            if not isinstance(v, int) or v < 1:
                raise UserError(f"ASPP {name} must be a positive int, got {v!r}")
        if not 0.0 <= dropout < 1.0:
            raise UserError(f"ASPP dropout must be in [0, 1), got {dropout}")
        self.rates, self.dropout = rates, dropout
        self._warned: set = set()
        branches = [nn.Sequential(nn.Conv2d(in_channels, branch_channels, 1, bias=False),
                                  nn.BatchNorm2d(branch_channels), nn.ReLU(inplace=True))]
        branches += [ASPPConv(in_channels, branch_channels, r) for r in rates]
        if image_pooling:
            branches.append(ASPPPooling(in_channels, branch_channels))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(self.convs) * branch_channels, out_channels, 1, bias=False),
            nn.BatchNorm2d(out_channels),
            nn.ReLU(inplace=True),
            nn.Dropout(dropout),
        )

    check_rates = staticmethod(check_rates)

    def _warn_wide_rates(self, h: int, w: int) -> None:
        wide = [r for r in self.rates if r >= min(h, w)]
        if wide and (h, w) not in self._warned:
            self._warned.add((h, w))
            warnings.warn(f"ASPP rates {wide} are at least the bottleneck's side ({h}x{w}): every off-centre tap of "
                          "those 3x3 kernels falls on padding, so they act as 1x1 convs; use smaller rates",
                          RuntimeWarning, stacklevel=2)  # inside the package: the CLI prints one line

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, C_in, H, W) -> (B, C_out, H, W)."""
        self._warn_wide_rates(*x.shape[-2:])
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))
