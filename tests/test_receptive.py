"""Receptive fields on networks small enough to work out by hand, and on mUNet."""
import pytest
import torch
from torch import nn

from dlstudio_aspp.receptive import effective_fields, field_side, mass_radius, theoretical_field


def _rows(field: torch.Tensor):
    rows, cols = field.any(1).nonzero()[:, 0], field.any(0).nonzero()[:, 0]
    return (int(rows[0]), int(rows[-1])), (int(cols[0]), int(cols[-1]))


def test_dilated_convs_add_their_reach():
    # 3x3 (reach 1) then 3x3 at dilation 2 (reach 2): 1 + 2*(1 + 2) = 7 pixels a side, about the pixel
    net = nn.Sequential(nn.Conv2d(1, 2, 3, padding=1), nn.ReLU(), nn.Conv2d(2, 1, 3, padding=2, dilation=2))
    field = theoretical_field(net, (32, 32), (16, 16), in_channels=1)
    assert _rows(field) == ((13, 19), (13, 19)) and int(field.sum()) == 49
    assert field_side(net, (32, 32), in_channels=1) == (7, True)


def test_a_stride_doubles_the_reach_of_what_follows():
    # transposed 2x2 stride 2: output 16 <- half-res 8; 3x3 there: 7..9; 3x3 stride 2 pad 1: 2i-1..2i+1 -> 13..19
    net = nn.Sequential(nn.Conv2d(1, 1, 3, stride=2, padding=1), nn.Conv2d(1, 1, 3, padding=1),
                        nn.ConvTranspose2d(1, 1, 2, stride=2))
    assert _rows(theoretical_field(net, (32, 32), (16, 16), in_channels=1)) == ((13, 19), (13, 19))


def test_max_pooling_counts_its_whole_window():
    # nearest 2x up: 16 <- 8; 3x3: 7..9; 2x2 max pool: 14..19, every pixel of it (a max pool's gradient alone
    # would reach one pixel per window)
    net = nn.Sequential(nn.MaxPool2d(2), nn.Conv2d(1, 1, 3, padding=1), nn.Upsample(scale_factor=2))
    field = theoretical_field(net, (32, 32), (16, 16), in_channels=1)
    assert _rows(field) == ((14, 19), (14, 19)) and int(field.sum()) == 36
    assert torch.nn.functional.max_pool2d.__name__ != "average"  # restored


def test_the_image_border_clips_the_field_and_a_bigger_field_is_a_lower_bound():
    net = nn.Sequential(*[nn.Conv2d(1, 1, 3, padding=1) for _ in range(10)])  # side 21
    assert _rows(theoretical_field(net, (16, 16), (2, 2), in_channels=1)) == ((0, 12), (0, 12))
    assert field_side(net, (16, 16), max_scale=1, in_channels=1) == (16, False)
    assert field_side(net, (16, 16), in_channels=1) == (21, True)


def test_the_effective_field_lies_inside_the_theoretical_one():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Conv2d(4, 4, 3, padding=2, dilation=2),
                        nn.BatchNorm2d(4), nn.ReLU(), nn.Conv2d(4, 2, 3, padding=1))
    for pixel in ((16, 16), (2, 3)):
        maps = effective_fields(net, torch.rand(5, 3, 32, 32), pixel)
        inside = theoretical_field(net, (32, 32), pixel)
        assert maps.shape == (5, 32, 32) and (maps[:, ~inside] == 0).all() and (maps[:, inside] > 0).any()
        assert torch.allclose(maps.sum((1, 2)), torch.ones(5))
    assert net.training  # its mode is restored


def test_munet_fields():
    from dlstudio_aspp.model import mUNetASPP

    torch.manual_seed(0)
    with_pool = mUNetASPP(depth=4, aspp=True, head="dense")
    assert theoretical_field(with_pool, (64, 64), (4, 4)).all()  # the image pool reaches every pixel
    off = mUNetASPP(depth=4, aspp=False, head="dense").eval()
    side, bounded = field_side(off, (64, 64))
    assert bounded and side < 256
    field = theoretical_field(off, (256, 256), (16, 16))
    maps = effective_fields(off, torch.rand(2, 3, 256, 256) * 255, (16, 16))
    assert not field.all() and (maps[:, ~field] == 0).all()


def test_mass_radius_by_hand():
    m = torch.zeros(9, 9)
    m[4, 4] = 1.0
    assert float(mass_radius(m, (4, 4))) == 0.0
    m[4, 8] = 1.0  # half the mass 4 pixels away
    assert float(mass_radius(m, (4, 4), share=0.5)) == 0.0 and float(mass_radius(m, (4, 4))) == 4.0
    both = mass_radius(torch.stack([m, torch.zeros(9, 9)]), (4, 4))
    assert both.tolist() == [4.0, 0.0]
    with pytest.raises(ValueError, match="share"):
        mass_radius(m, (4, 4), share=0)
