"""``mUNetASPP``: DLStudio's mUNet with an ASPP block at the bottleneck.

The class subclasses the installed DLStudio's own mUNet (``mUNet`` in 2.5.x, ``mUnet``
in 2.3.x) and keeps every stock attribute name, so a stock ``state_dict`` loads into it
and only the new ``aspp.*`` keys are missing. The forward pass is stock's, split into
:meth:`encode` (down to ``skip128dsDN``: 128 channels at H/8 x W/8), :meth:`bottleneck`
(the ASPP, or identity when it is off) and :meth:`decode`. With ASPP off and the same
weights the output equals stock's bit for bit.

Shape:
    input (B, 3, H, W) with H and W multiples of 8 -> output (B, num_classes, H, W)
"""
from __future__ import annotations

from typing import List, Sequence, Tuple

import torch
from torch import nn

from .aspp import ASPP
from .dlstudio_glue import load_dlstudio, stock_munet_class
from .errors import UserError
from .registry import HEADS, resolve  # HEADS: the output layers (``conv_out``); see make_head
from .spec import DEFAULT_RATES

DLStudio = load_dlstudio()
StockMUNet = stock_munet_class(DLStudio)
BOTTLENECK_CHANNELS = 128
DECODER_CHANNELS = 64  # channels into conv_out, at H/2 x W/2



def make_head(name: str, in_channels: int, num_classes: int) -> nn.Module:
    """The last layer, (B, 64, H/2, W/2) -> (B, num_classes, H, W).

    - ``'stock'``: DLStudio's ``ConvTranspose2d(3, stride=2, dilation=2, padding=2,
      output_padding=1)``. With stride 2 and dilation 2 every kernel tap lands on an
      even output row and column, so 3 of every 4 output pixels (odd row or column)
      are the bias alone, whatever the input: they can never be segmented.
    - ``'dense'``: ``ConvTranspose2d(4, stride=2, padding=1)``: every output pixel gets
      2x2 taps, so every pixel depends on the input, evenly.
    - ``'bilinear'``: bilinear 2x upsampling, then a 3x3 conv.
    """
    return resolve(HEADS[name].build)(in_channels, num_classes)


def stock_head(in_channels: int, num_classes: int) -> nn.Module:
    return nn.ConvTranspose2d(in_channels, num_classes, 3, stride=2, dilation=2, output_padding=1, padding=2)


def dense_head(in_channels: int, num_classes: int) -> nn.Module:
    return nn.ConvTranspose2d(in_channels, num_classes, 4, stride=2, padding=1)


def bilinear_head(in_channels: int, num_classes: int) -> nn.Module:
    return nn.Sequential(nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                         nn.Conv2d(in_channels, num_classes, 3, padding=1))


def input_dependent_fraction(model: nn.Module, image_size=(64, 64)) -> float:
    """Fraction of output pixels whose value depends on the input.

    The model runs in eval mode on two independent random images; a pixel depends on
    the input where any channel's output differs between them (a pixel that is the bias
    alone is identical). 0.25 for the stock head, 1.0 for the dense ones.
    """
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            a, b = model(torch.rand(2, 3, *image_size) * 255).unbind(0)
        return float((a != b).any(0).float().mean())
    finally:
        model.train(was_training)


def check_input(x: torch.Tensor) -> None:
    """Raise :class:`UserError` for an input mUNet cannot segment, before any conv runs.

    mUNet halves the size three times (max-pool, then two stride-2 1x1 convs) and
    doubles it three times, pasting saved encoder maps into the decoder; those only
    line up when H and W are multiples of 8.
    """
    if x.dim() != 4 or x.shape[1] != 3:
        raise UserError(f"mUNet expects a (B, 3, H, W) image batch, got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if h < 8 or w < 8 or h % 8 or w % 8:
        raise UserError(f"mUNet needs H and W that are multiples of 8 (>= 8), got {h}x{w}; "
                        f"resize to e.g. {max(8, h // 8 * 8)}x{max(8, w // 8 * 8)}")


class mUNetASPP(StockMUNet):
    """DLStudio mUNet with ASPP between encoder and decoder.

    Args:
        skip_connections: as stock mUNet. Default True.
        depth: as stock mUNet. Default 16.
        num_classes: output channels (5 for PurdueShapes5MultiObject). Default 5.
        aspp: put the ASPP at the bottleneck; False gives stock mUNet. Default True.
        aspp_rates: dilation rates. Default (2, 4, 6), chosen for the 8x8 bottleneck
            of 64x64 images; ``dlstudio_aspp.spec.rates_for`` gives the rates for larger images.
        aspp_channels: width of each ASPP branch. Default 128.
        aspp_pooling: image-pooling branch on or off. Default True.
        aspp_dropout: dropout after the ASPP projection. Default 0.
    """

    def __init__(self, skip_connections: bool = True, depth: int = 16, *, num_classes: int = 5, aspp: bool = True,
                 aspp_rates: Sequence[int] = DEFAULT_RATES, aspp_channels: int = 128, aspp_pooling: bool = True,
                 aspp_dropout: float = 0.0, head: str = "stock") -> None:
        if not isinstance(num_classes, int) or num_classes < 1:
            raise UserError(f"num_classes must be a positive int, got {num_classes!r}")
        if not isinstance(depth, int) or depth < 4:
            raise UserError(f"depth must be an int >= 4 (stock uses 16), got {depth!r}")
        HEADS[head]  # an unknown name: one line listing the valid ones
        super().__init__(skip_connections=skip_connections, depth=depth)
        if num_classes != 5 or head != "stock":
            self.conv_out = make_head(head, DECODER_CHANNELS, num_classes)
        self.num_classes = num_classes
        self.head = head
        self.config = dict(skip_connections=skip_connections, depth=depth, num_classes=num_classes, aspp=aspp,
                           aspp_rates=list(aspp_rates), aspp_channels=aspp_channels, aspp_pooling=aspp_pooling,
                           aspp_dropout=aspp_dropout, head=head)
        self.aspp = (ASPP(BOTTLENECK_CHANNELS, rates=aspp_rates, branch_channels=aspp_channels,
                          image_pooling=aspp_pooling, dropout=aspp_dropout) if aspp else None)

    @classmethod
    def config_kwargs(cls, config: dict) -> dict:
        """The constructor's keyword arguments out of a saved ``config`` (unknown keys dropped)."""
        import inspect

        names = set(inspect.signature(cls.__init__).parameters) - {"self"}
        return {k: v for k, v in config.items() if k in names}

    # The three steps below are stock mUNet.forward, cut at the bottleneck.
    def encode(self, x: torch.Tensor) -> Tuple[torch.Tensor, List[torch.Tensor]]:
        """(B, 3, H, W) -> bottleneck (B, 128, H/8, W/8) and the three saved maps."""
        q = self.depth // 4
        x = nn.MaxPool2d(2, 2)(nn.functional.relu(self.conv_in(x)))
        for skip64 in self.skip64DN_arr[:q]:
            x = skip64(x)
        save1 = x[:, : x.shape[1] // 2].clone()
        x = self.skip64dsDN(x)
        for skip64 in self.skip64DN_arr[q:]:
            x = skip64(x)
        x = self.bn1DN(x)
        save2 = x[:, : x.shape[1] // 2].clone()
        x = self.skip64to128DN(x)
        for skip128 in self.skip128DN_arr[:q]:
            x = skip128(x)
        x = self.bn2DN(x)
        save3 = x[:, : x.shape[1] // 2].clone()
        for skip128 in self.skip128DN_arr[q:]:
            x = skip128(x)
        x = self.skip128dsDN(x)
        return x, [save1, save2, save3]

    def bottleneck(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 128, h, w) -> (B, 128, h, w): the ASPP, or identity when it is off."""
        return x if self.aspp is None else self.aspp(x)

    def decode(self, x: torch.Tensor, saved: List[torch.Tensor]) -> torch.Tensor:
        """Bottleneck (B, 128, H/8, W/8) -> (B, num_classes, H, W)."""
        save1, save2, save3 = saved
        q = self.depth // 4
        x = self.skip128usUP(x)
        for skip128 in self.skip128UP_arr[:q]:
            x = skip128(x)
        x[:, : save3.shape[1]] = save3
        x = self.bn1UP(x)
        for skip128 in self.skip128UP_arr[:q]:  # stock reuses the first quarter here
            x = skip128(x)
        x = self.skip128to64UP(x)
        for skip64 in self.skip64UP_arr[q:]:
            x = skip64(x)
        x[:, : save2.shape[1]] = save2
        x = self.bn2UP(x)
        x = self.skip64usUP(x)
        for skip64 in self.skip64UP_arr[:q]:
            x = skip64(x)
        x[:, : save1.shape[1]] = save1
        return self.conv_out(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) -> (B, num_classes, H, W)."""
        check_input(x)
        x, saved = self.encode(x)
        return self.decode(self.bottleneck(x), saved)


def load_stock_state_dict(model: nn.Module, state_dict: dict) -> List[str]:
    """Load a stock mUNet ``state_dict`` into ``model``; return the keys it did not fill.

    Those are ``aspp.*`` (a fresh ASPP) and, when ``model`` has a dense head, the output
    layer ``conv_out.*``: the stock head's weights do not fit it, so it keeps its fresh
    init and a line says so.

    Raises:
        UserError: a key other than ``aspp.*`` is missing, or the checkpoint has keys
            that mUNetASPP does not know (it is not a stock mUNet checkpoint).
    """
    if getattr(model, "head", "stock") != "stock":
        state_dict = {k: v for k, v in state_dict.items() if not k.startswith("conv_out.")}
        print(f"loaded every stock layer but the output layer: the stock conv_out does not fit head={model.head!r}, "
              "which keeps its fresh init")
    try:
        result = model.load_state_dict(state_dict, strict=False)
    except RuntimeError as exc:  # shape mismatches
        first = str(exc).strip().splitlines()[1:2] or [str(exc)]
        raise UserError(f"not a stock mUNet state_dict for this model ({first[0].strip()}); check depth and num_classes") from None
    fresh = ("aspp.",) if getattr(model, "head", "stock") == "stock" else ("aspp.", "conv_out.")
    missing = [k for k in result.missing_keys if not k.startswith(fresh)]
    if missing or result.unexpected_keys:
        raise UserError(f"not a stock mUNet state_dict for this model: missing {missing[:5]}, "
                         f"unexpected {result.unexpected_keys[:5]}; check depth and num_classes")
    return list(result.missing_keys)


def from_stock_checkpoint(path_or_state_dict, **kwargs) -> "mUNetASPP":
    """Build ``mUNetASPP(**kwargs)`` and start it from a stock mUNet checkpoint.

    The encoder and decoder take the stock weights; the ASPP keeps its fresh init.
    """
    sd = path_or_state_dict
    if not isinstance(sd, dict):
        sd = torch.load(sd, map_location="cpu", weights_only=True)
    model = mUNetASPP(**kwargs)
    load_stock_state_dict(model, sd)
    return model


def model_summary(model: nn.Module, image_size=(64, 64)) -> dict:
    """Learnable parameters and forward GFLOPs for one (1, 3, H, W) image."""
    from torch.utils.flop_counter import FlopCounterMode

    params = sum(p.numel() for p in model.parameters() if p.requires_grad)
    aspp = getattr(model, "aspp", None)
    aspp_params = sum(p.numel() for p in aspp.parameters()) if aspp is not None else 0
    was_training = model.training
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as fc:
        model(torch.zeros(1, 3, *image_size))
    model.train(was_training)
    return {"params": params, "aspp_params": aspp_params, "gflops": fc.get_total_flops() / 1e9}


def describe(net, image_size=(64, 64)) -> str:
    """Parameters and forward GFLOPs per image, with and without the ASPP block."""
    size = tuple(image_size)
    on = model_summary(net, size)
    dense = (f"; output pixels that depend on the input: {input_dependent_fraction(net, size):.0%} "
             f"(head {getattr(net, 'head', 'stock')!r})")
    where = f"forward GFLOPs per {size[0]}x{size[1]} image"
    aspp = getattr(net, "aspp", None)
    if aspp is None:
        return f"learnable parameters: {on['params']:,} (no ASPP); {where}: {on['gflops']:.3f}{dense}"
    net.aspp = None  # the same network with the bottleneck left as stock has it
    try:
        off = model_summary(net, size)
    finally:
        net.aspp = aspp
    return (f"learnable parameters: {on['params']:,} with ASPP, {off['params']:,} without (ASPP adds "
            f"{on['aspp_params']:,}); {where}: {on['gflops']:.3f} with ASPP, {off['gflops']:.3f} without{dense}")
