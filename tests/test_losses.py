import math

import pytest
import torch

from dlstudio_aspp.losses import DiceLoss, DiceMSELoss, MSELoss, dice_loss, get_loss
from dlstudio_aspp.spec import loss_label


def t(*rows):
    return torch.tensor(rows, dtype=torch.float32).view(1, 1, len(rows), -1)


SQ = t([1, 1], [0, 0])
OTHER = t([0, 0], [1, 1])
EMPTY = t([0, 0], [0, 0])


@pytest.mark.parametrize("smooth", [0.0, 1.0])
def test_perfect_prediction_scores_zero(smooth):
    assert dice_loss(SQ, SQ, smooth=smooth).item() == pytest.approx(0.0, abs=1e-6)
    assert dice_loss(SQ * 50, SQ * 50, smooth=smooth).item() == pytest.approx(0.0, abs=1e-6)


def test_disjoint_hand_computed():
    # num 0, den 2 + 2: smooth 1 -> dice 1/5, loss 4/5; smooth 0 -> loss 1
    assert dice_loss(SQ, OTHER).item() == pytest.approx(0.8, abs=1e-6)
    assert dice_loss(SQ, OTHER, smooth=0).item() == pytest.approx(1.0)


def test_empty_cases_hand_computed():
    assert dice_loss(EMPTY, EMPTY).item() == pytest.approx(0.0)          # smooth: (0+1)/(0+1)
    assert dice_loss(EMPTY, EMPTY, smooth=0).item() == pytest.approx(1.0)  # the homework formula: 0/(0+eps)
    assert dice_loss(SQ, EMPTY).item() == pytest.approx(1 - 1 / 3)        # pred sum^2 = 2 -> 1/(2+1)
    assert dice_loss(EMPTY, SQ).item() == pytest.approx(1 - 1 / 3)


def test_never_nan_and_empty_channel_has_gradient():
    p = torch.full((1, 1, 2, 2), 0.1, requires_grad=True)
    dice_loss(p, EMPTY).backward()
    assert torch.isfinite(p.grad).all() and (p.grad > 0).all()
    z = torch.zeros(1, 1, 2, 2, requires_grad=True)
    loss = dice_loss(z, EMPTY, smooth=0)
    loss.backward()
    assert not math.isnan(loss.item()) and torch.isfinite(z.grad).all()


def test_scale_invariant_on_dlstudio_masks():
    p, q = torch.rand(2, 5, 8, 8), (torch.rand(2, 5, 8, 8) > .5).float()
    assert dice_loss(p * 150, q * 150, smooth=0).item() == pytest.approx(dice_loss(p, q, smooth=0).item(), rel=1e-5)


def test_shape_mismatch_messages():
    with pytest.raises(ValueError, match=r"same shape, got \(2, 5, 4, 4\) and \(2, 3, 4, 4\)"):
        dice_loss(torch.rand(2, 5, 4, 4), torch.rand(2, 3, 4, 4))
    with pytest.raises(ValueError, match="same shape"):
        MSELoss()(torch.rand(2, 5, 4, 4), torch.rand(1, 5, 4, 4))
    with pytest.raises(ValueError, match=r"\(B, C, H, W\)"):
        DiceLoss()(torch.rand(5, 4, 4), torch.rand(5, 4, 4))


def test_dice_mse_combines_with_scale():
    p, q = torch.rand(2, 5, 8, 8), torch.rand(2, 5, 8, 8)
    loss = DiceMSELoss(20)
    want = torch.nn.functional.mse_loss(p, q) + 20 * dice_loss(p, q)
    assert loss(p, q).item() == pytest.approx(want.item(), rel=1e-6)
    assert set(loss.last_components) == {"mse", "dice", "dice_scale"}
    for bad in (-1, float("nan"), "x"):
        with pytest.raises(ValueError, match=">= 0 or 'auto'"):
            DiceMSELoss(bad)


def test_auto_scale_balances_then_freezes():
    torch.manual_seed(0)
    loss = DiceMSELoss("auto", auto_warmup=3)
    p, q = torch.rand(2, 5, 8, 8) * 100, torch.rand(2, 5, 8, 8) * 100
    for _ in range(3):
        loss(p, q)
    c = loss.last_components
    assert float(c["mse"]) == pytest.approx(c["dice_scale"] * float(c["dice"]), rel=1e-5)
    assert loss.scale_frozen
    frozen = loss.dice_scale
    loss(p * 2, q)
    assert loss.dice_scale == frozen


@pytest.mark.parametrize("name,cls,scale", [("mse", MSELoss, None), ("dice", DiceLoss, None), ("dice+mse", DiceMSELoss, 1.0),
                                            ("dice+mse:20", DiceMSELoss, 20.0), ("Dice+MSE:0.5", DiceMSELoss, 0.5)])
def test_registry(name, cls, scale):
    loss = get_loss(name)
    assert isinstance(loss, cls)
    if scale is not None:
        assert loss.dice_scale == scale


def test_registry_errors_and_callables():
    with pytest.raises(ValueError, match="valid: mse, dice"):
        get_loss("focal")
    with pytest.raises(ValueError, match="bad Dice scale"):
        get_loss("dice+mse:lots")
    f = lambda o, t: (o - t).abs().mean()  # noqa: E731
    assert get_loss(f) is f
    assert get_loss("dice+mse:auto").auto
    assert loss_label("dice+mse:20") == "dice+mse-20"


def test_backward_example_runs():
    p = torch.rand(2, 5, 8, 8, requires_grad=True)
    get_loss("dice+mse:20")(p, torch.rand(2, 5, 8, 8)).backward()
    assert p.grad is not None


@pytest.mark.parametrize("name,bce,dice", [("bce", 1, 0), ("sigmoid-dice", 0, 1), ("bce+dice", 1, 1)])
def test_logit_losses(name, bce, dice):
    from dlstudio_aspp.losses import LogitLoss

    loss = get_loss(name)
    assert isinstance(loss, LogitLoss) and loss.on_logits and (loss.bce_weight, loss.dice_weight) == (bce, dice)
    target = torch.zeros(2, 2, 4, 4)
    target[0, 0, :2] = 1  # class 0 only in image 0, class 1 nowhere
    logits = (target * 2 - 1) * 20  # confident and right
    assert loss(logits, target).item() == pytest.approx(0.0, abs=1e-6)
    wrong = loss(-logits, target)
    assert wrong.item() > 0.5
    x = torch.zeros(2, 2, 4, 4, requires_grad=True)
    loss(x, target).backward()
    assert x.grad[0, 0, :2].lt(0).all()  # the object's logits are pushed up
    assert set(loss.last_components) == {k for k, w in (("bce", bce), ("dice", dice)) if w}


def test_batch_dice_keeps_a_channel_that_is_absent_from_most_images():
    """Per-image Dice pulls a channel to all-zero through every image that lacks the shape; the batch
    form does not: its gradient on the one image that has the shape is as strong as the others'."""
    from dlstudio_aspp.losses import LogitLoss, dice_per_channel

    target = torch.zeros(4, 1, 8, 8)
    target[0, 0, 2:6, 2:6] = 1
    x = torch.full((4, 1, 8, 8), -1.0, requires_grad=True)
    LogitLoss(0, 1)(x, target).backward()
    batch_push = -x.grad[0, 0, 2:6, 2:6].mean()
    y = torch.full((4, 1, 8, 8), -1.0, requires_grad=True)
    (1 - dice_per_channel(torch.sigmoid(y), target)).mean().backward()
    sample_push = -y.grad[0, 0, 2:6, 2:6].mean()
    assert batch_push > 2 * sample_push > 0


def test_bad_loss_names_list_the_logit_losses_too():
    with pytest.raises(ValueError, match="valid: mse, dice, .*bce, sigmoid-dice, bce\\+dice"):
        get_loss("focal")
