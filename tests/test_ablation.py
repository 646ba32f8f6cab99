"""ASPP branches switched off one at a time, and the padding each one reads."""
import pytest
import torch
from torch.nn import functional as F

from dlstudio_aspp.ablation import branch_names, branch_rates, padding_share, without_branches
from dlstudio_aspp.model import mUNetASPP


def _counted_padding(side: int, rate: int) -> float:
    """Taps inside the map, counted by convolving ones with ones (zero padding contributes nothing)."""
    inside = F.conv2d(torch.ones(1, 1, side, side), torch.ones(1, 1, 3, 3), padding=rate, dilation=rate).sum()
    return 1.0 - float(inside) / (9 * side * side)


@pytest.mark.parametrize("rate", [1, 2, 4, 6, 8, 12])
def test_padding_share_counts_taps_outside_the_map(rate):
    assert padding_share((8, 8), rate) == pytest.approx(_counted_padding(8, rate))


def test_padding_share_by_hand():
    # 8x8, rate 6: per side the taps at -6 and +6 land inside at 2 of 8 positions each: (8+2+2)/24 = 1/2 inside
    assert padding_share((8, 8), 6) == pytest.approx(0.75)
    assert padding_share((8, 8), 2) == pytest.approx(1 - (20 / 24) ** 2)
    assert padding_share((8, 8), None) == 0.0


def _model():
    torch.manual_seed(0)
    return mUNetASPP(depth=4, aspp=True, aspp_rates=(2, 4, 6), head="dense").eval()


def test_branch_names_and_rates():
    net = _model()
    assert branch_names(net.aspp) == ["1x1", "rate 2", "rate 4", "rate 6", "image pool"]
    assert branch_rates(net.aspp) == [None, 2, 4, 6, None]


def test_zeroing_a_dead_branch_changes_nothing_to_the_last_bit():
    net = _model()
    with torch.no_grad():
        net.aspp.convs[2][1].bias.fill_(-1e4)  # rate 4: BN's shift below any input, ReLU outputs zeros
    x = torch.rand(2, 3, 64, 64) * 255
    with torch.no_grad():
        assert (net.aspp.convs[2](net.encode(x)[0]) == 0).all()
        assert torch.equal(without_branches(net, [2])(x), net(x))
        assert not torch.equal(without_branches(net, [1])(x), net(x))  # a live one does change it
    assert not isinstance(net.aspp.convs[2], type(without_branches(net, [2]).aspp.convs[2]))  # the original kept


def test_zeroing_every_branch_leaves_the_projection_alone():
    net = _model()
    off = without_branches(net, range(len(net.aspp.convs)))
    x = torch.rand(3, 128, 8, 8)
    with torch.no_grad():
        assert torch.equal(off.aspp(x), net.aspp.project(torch.zeros(3, 5 * 128, 8, 8)))
