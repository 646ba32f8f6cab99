import pytest
import torch

from dlstudio_aspp.aspp import ASPP


@pytest.mark.parametrize("rates", [(2, 4, 6), (1,), (1, 2, 3, 4, 5)])
@pytest.mark.parametrize("pooling", [True, False])
def test_projection_width_follows_branches(rates, pooling):
    a = ASPP(128, rates=rates, branch_channels=16, image_pooling=pooling)
    assert len(a.convs) == 1 + len(rates) + int(pooling)
    assert a.project[0].in_channels == 16 * len(a.convs)
    y = a(torch.randn(2, 128, 8, 8))
    assert y.shape == (2, 128, 8, 8)


def test_dilated_branches_keep_size_and_padding_equals_rate():
    a = ASPP(8, rates=(2, 4, 6), branch_channels=4)
    for conv, r in zip(a.convs[1:4], (2, 4, 6)):
        assert conv[0].dilation == (r, r) and conv[0].padding == (r, r)


def test_batch_size_one_trains():
    a = ASPP(32, branch_channels=8).train()
    y = a(torch.randn(1, 32, 8, 8))
    y.mean().backward()
    assert a.convs[-1][1].weight.grad is not None


@pytest.mark.parametrize("kw,match", [
    (dict(rates=()), "at least one"), (dict(rates=(0, 2)), ">= 1"), (dict(rates=(2.5,)), "ints"),
    (dict(branch_channels=0), "positive"), (dict(dropout=1.0), r"\[0, 1\)"),
])
def test_bad_arguments(kw, match):
    with pytest.raises(ValueError, match=match):
        ASPP(16, **kw)


def test_out_channels_and_dropout():
    a = ASPP(16, 24, branch_channels=4, dropout=0.5)
    assert a(torch.randn(2, 16, 4, 4)).shape == (2, 24, 4, 4)


def test_rates_too_wide_for_the_bottleneck_warn_once():
    aspp = ASPP(8, rates=(2, 8), branch_channels=4)
    with pytest.warns(RuntimeWarning, match=r"rates \[8\] are at least the bottleneck's side \(8x8\)"):
        aspp(torch.randn(2, 8, 8, 8))
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        aspp(torch.randn(2, 8, 8, 8))  # once per size
        ASPP(8, rates=(2, 4, 6), branch_channels=4)(torch.randn(2, 8, 8, 8))


def test_aspp_dropout_acts_in_training_mode_only():
    """--aspp-dropout drops channels of the projection while training (two draws differ, about p of the
    projection's outputs are zero) and leaves evaluation deterministic."""
    import torch

    from dlstudio_aspp.model import mUNetASPP

    torch.manual_seed(0)
    net = mUNetASPP(depth=4, aspp_dropout=0.5)
    x = torch.rand(2, 3, 64, 64)
    relu, drop = [], []
    net.aspp.project[2].register_forward_hook(lambda m, i, out: relu.append(out.detach().clone()))
    net.aspp.project[3].register_forward_hook(lambda m, i, out: drop.append(out.detach().clone()))
    net.train()
    a, b = net(x), net(x)
    assert not torch.equal(a, b)
    alive = relu[0] > 0
    kept = drop[0][alive] != 0
    assert 0.4 <= float(kept.float().mean()) <= 0.6  # about half of the live channels dropped
    assert torch.allclose(drop[0][alive][kept], 2 * relu[0][alive][kept])  # the rest scaled by 1/(1-p)
    net.eval()
    assert torch.equal(net(x), net(x))
    still = mUNetASPP(depth=4, aspp_dropout=0.0).train()
    torch.manual_seed(1)
    c = still(x)
    torch.manual_seed(2)
    assert torch.equal(c, still(x))  # no dropout: training mode draws nothing
