"""RunSpec: one declaration per option; recipes layered under explicit values; checks that name the flag."""
import dataclasses

import pytest

from dlstudio_aspp.registry import parse_loss
from dlstudio_aspp.spec import RECIPE_WHY, RECIPES, RunSpec, flag, normalize_loss, rates_for, show_value


def test_layers_defaults_base_recipe_explicit():
    spec = RunSpec.build("modern", base=dict(lr=5e-5, momentum=0.5, epochs=6), grad_clip=None, normalize_masks=False)
    assert spec.lr == RECIPES["modern"]["lr"]           # the recipe wins over the base
    assert spec.epochs == 6                             # the base fills what the recipe leaves
    assert spec.grad_clip is None and spec.normalize_masks is False  # explicit off wins over the recipe
    assert spec.head == "dense" and spec.recipe == "modern"
    assert RunSpec.build().head == "stock" and RunSpec.build().lr == 1e-4


def test_recipes_by_name_and_bad_names_list_the_valid_ones():
    assert set(RECIPES) >= {"stock", "modern"}
    with pytest.raises(ValueError, match="unknown recipe 'fast'; valid: stock, modern"):
        RunSpec.build("fast")
    with pytest.raises(ValueError, match="unknown option.*colour"):
        RunSpec.build(colour="red")


@pytest.mark.parametrize("change,match", [
    (dict(grad_clip=0), "--grad-clip must be a finite number > 0"), (dict(grad_clip=-1.0), "--grad-clip"),
    (dict(batch_size=0), "--batch-size must be an int >= 1"), (dict(depth=2), "--depth must be an int >= 4"),
    (dict(lr=0), "--lr must be a finite number > 0"), (dict(momentum=1.5), "--momentum must be .* < 1"),
    (dict(head="wide"), "--head must be one of stock, dense, bilinear"), (dict(rates=(0,)), "rates must be ints >= 1"),
    (dict(optimizer="lbfgs"), "--optimizer must be one of sgd, adam, adamw"), (dict(loss="l1"), "unknown loss 'l1'"),
    (dict(checkpoint_every=-1), "--checkpoint-every must be an int >= 0"),
    (dict(aspp_dropout=1.0), "--aspp-dropout must be a finite number >= 0 and < 1"),
    (dict(copy_paste=1.5), "--copy-paste must be a probability, from 0 to 1"),
])
def test_bad_values_name_the_flag(change, match):
    with pytest.raises(ValueError, match=match):
        RunSpec.build(**change).validate()


def test_iterations_epochs_and_max_iters():
    assert RunSpec(epochs=2).iterations(10000) == (2, 5000)
    assert RunSpec().iterations(10000) == (1, 2500)                     # default: one epoch
    assert RunSpec(epochs=6, max_iters=300).iterations(10000) == (1, 300)  # --max-iters wins
    assert RunSpec(max_iters=5001).iterations(10000) == (3, 5001)


def test_the_coco_recipe_budget_is_iterations_whatever_the_set_holds():
    spec = RunSpec.build("coco")
    assert spec.iterations(203)[1] == spec.iterations(2000)[1] == RECIPES["coco"]["max_iters"]
    by_epochs = RunSpec.build("coco", epochs=3)                  # an explicit --epochs replaces the budget
    assert by_epochs.max_iters is None and by_epochs.iterations(40) == (3, 30)
    assert RunSpec.build("coco", epochs=3, max_iters=7).iterations(40) == (1, 7)  # both given: --max-iters wins
    assert RunSpec.build("coco", base=dict(epochs=6)).max_iters == RECIPES["coco"]["max_iters"]  # a base does not


def test_the_coco_recipe_trains_depth_4_and_depth_16_stays_reachable():
    """The time-to-accuracy front chose depth 4 for the CPU budget; --depth 16 --recipe stock is the homework's."""
    assert RunSpec.build("coco").depth == 4
    with pytest.warns(UserWarning, match="depth 16 with the coco recipe's 11000 iterations"):
        assert RunSpec.build("coco", depth=16).depth == 16
    stock = RunSpec.build("stock", depth=16)
    assert (stock.depth, stock.head, stock.loss, stock.max_iters) == (16, "stock", "mse", None)


@pytest.mark.parametrize("explicit", [dict(), dict(depth=4), dict(depth=16, max_iters=3000),
                                      dict(depth=16, epochs=150)])
def test_a_budget_of_ones_own_or_the_recipes_depth_is_not_warned_about(explicit, recwarn):
    RunSpec.build("coco", **explicit)
    RunSpec.build("stock", depth=16)  # stock's budget is epochs, whatever the depth
    assert not [w for w in recwarn if "iterations, sized for depth" in str(w.message)]


def test_every_value_of_the_coco_recipe_says_why():
    assert set(RECIPE_WHY["coco"]) == set(RECIPES["coco"])
    assert all(len(reason) > 20 for reason in RECIPE_WHY["coco"].values())


def test_options_that_do_not_apply_are_not_recorded():
    assert "momentum" not in RunSpec(optimizer="adamw").to_json() and "momentum" in RunSpec().to_json()
    assert "rates" not in RunSpec(aspp=False).to_json() and "aspp_dropout" not in RunSpec(aspp=False).to_json()
    assert "momentum" not in RunSpec(optimizer="adam").summary_line()


def test_auto_rates_follow_the_bottleneck():
    assert [rates_for((s, s)) for s in (32, 64, 128, 192, 256, 512)] == [(2, 4, 6), (2, 4, 6), (2, 4, 6), (4, 9, 14),
                                                                         (6, 12, 18), (12, 24, 36)]
    assert RunSpec().rates is None and RunSpec().for_images((256, 256)).rates == (6, 12, 18)
    assert RunSpec(rates=(1, 2)).for_images((256, 256)).rates == (1, 2)  # explicit rates are kept
    assert show_value("rates", None) == "auto" and RunSpec.from_json(RunSpec().to_json()) == RunSpec()


def test_json_round_trip():
    spec = RunSpec.build("modern", seed=3, rates=(6, 12, 18))
    assert RunSpec.from_json(spec.to_json()) == spec
    assert RunSpec.from_json(dict(spec.to_json(), field_from_the_future=1)) == spec


def test_loss_names():
    assert normalize_loss("MSE+Dice:20") == "dice+mse:20" and parse_loss("bce+dice") == ("bce+dice", None)
    with pytest.raises(ValueError, match="bad Dice scale"):
        parse_loss("dice+mse:x")
    with pytest.raises(ValueError, match="unknown loss"):
        parse_loss("bce:3")


def test_every_field_declares_help_group_and_check():
    for f in dataclasses.fields(RunSpec):
        assert f.metadata["help"] and f.metadata["group"] in ("model", "data", "train", "run"), f.name
        assert flag(f.name).startswith("--")


def test_the_documented_option_table_is_the_spec():
    from pathlib import Path

    from dlstudio_aspp.commands import run_spec_defaults
    from dlstudio_aspp.spec import options_markdown

    readme = (Path(__file__).resolve().parents[1] / "docs" / "training.md").read_text()
    block = readme.split("<!-- options:start -->\n")[1].split("\n<!-- options:end -->")[0]
    assert block == options_markdown(run_spec_defaults())
