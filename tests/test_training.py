import json

import pytest
import torch

from conftest import loss_turning, make_dls, make_segmenter
from dlstudio_aspp.dlstudio_glue import load_dlstudio
from dlstudio_aspp.model import mUNetASPP
from dlstudio_aspp.errors import NonFiniteLossError

TRAIN, TEST = "PurdueShapes5MultiObject-20-train.gz", "PurdueShapes5MultiObject-20-test.gz"


@pytest.mark.slow
def test_mse_default_matches_stock_loop(real_shapes, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    DLStudio = load_dlstudio()
    torch.manual_seed(0)
    net = mUNetASPP(aspp=False)
    # stock: its own class and method, losses recorded through nn.MSELoss
    stock_losses = []

    class Recording(torch.nn.MSELoss):
        def forward(self, a, b):
            out = super().forward(a, b)
            stock_losses.append(out.item())
            return out

    dls = make_dls(real_shapes, tmp_path / "stock", use_gpu=True)  # stock sets .device only when use_gpu
    (tmp_path / "stock").mkdir()
    stock = DLStudio.SemanticSegmentation(dl_studio=dls, max_num_objects=5)
    ds = DLStudio.SemanticSegmentation.PurdueShapes5MultiObjectDataset(dl_studio=dls, segmenter=stock, train_or_test="train", dataset_file=TRAIN)
    stock.train_dataloader = torch.utils.data.DataLoader(ds, batch_size=4, shuffle=True, num_workers=0)
    monkeypatch.setattr(torch.nn, "MSELoss", Recording)
    torch.manual_seed(1)
    stock.run_code_for_training_for_semantic_segmentation(net)
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    stock_weights = torch.load(tmp_path / "stock" / "saved_model", weights_only=True)

    stock_perf = tmp_path / "performance_numbers_1.txt"
    stock_perf.unlink()  # stock wrote it here (no loss line in 5 iterations: empty); ours must write its own

    seg = make_segmenter(real_shapes, tmp_path / "ours", TRAIN, TEST, use_gpu=True)  # the same device as stock's
    torch.manual_seed(1)
    history = seg.run_code_for_training_for_semantic_segmentation(net, progress=False)
    ours = torch.load(tmp_path / "ours" / "saved_model", weights_only=True)
    assert len(stock_losses) == 5
    assert history["loss"] == stock_losses
    assert all(torch.equal(stock_weights[k], ours[k]) for k in stock_weights)
    assert stock_perf.is_file() and stock_perf.read_text() == ""


def test_history_files_and_components(synthetic_shapes, tmp_path):
    seg = make_segmenter(synthetic_shapes, tmp_path, "PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")
    h = seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), loss="dice+mse:auto", seed=0,
                                                            progress=False, log_every=2)
    assert len(h["loss"]) == 6 and len(h["components"]["dice"]) == 6
    saved = json.loads((tmp_path / "saved_model.history.json").read_text())
    assert saved["loss"] == h["loss"] and saved["dice_scale"] == h["dice_scale"]
    csv = (tmp_path / "saved_model.history.csv").read_text().splitlines()
    assert csv[0] == "iteration,epoch,loss,lr,dice,dice_scale,mse" and len(csv) == 7
    assert (tmp_path / "performance_numbers_1.txt").read_text().count("\n") == 3  # every 2 of 6 iterations
    card = json.loads((tmp_path / "saved_model.json").read_text())
    assert card["mask_values"] == [50, 100, 150, 200, 250] and card["normalize_masks"] is False


def test_seed_reproduces_exactly(synthetic_shapes, tmp_path):
    runs = []
    torch.manual_seed(0)
    net = mUNetASPP(depth=4, aspp_dropout=0.3)
    for k in range(2):
        seg = make_segmenter(synthetic_shapes, tmp_path / str(k), "PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")
        torch.manual_seed(k)  # different global state: the seed option must override it
        seg.run_code_for_training_for_semantic_segmentation(net, seed=7, max_iters=4, progress=False)
        runs.append(seg)
    assert runs[0].history["loss"] == runs[1].history["loss"]


class _Crash:
    """Makes the n-th batch drawn from a dataset raise, like a crash mid-run (options unchanged)."""

    def __init__(self, dataset, at_item):
        self.dataset, self.at, self.n = dataset, at_item, 0
        self.label_map = dataset.label_map

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, i):
        self.n += 1
        if self.n == self.at:
            raise RuntimeError("simulated crash")
        return self.dataset[i]


def _crash_loader(seg, at_item):
    loader = seg.train_dataloader
    seg.train_dataloader = torch.utils.data.DataLoader(_Crash(loader.dataset, at_item), batch_size=loader.batch_size,
                                                       shuffle=True, num_workers=0)
    return loader


@pytest.mark.slow
def test_resume_after_crash_gives_same_weights(synthetic_shapes, tmp_path):
    torch.manual_seed(0)
    net = mUNetASPP(depth=4, aspp_dropout=0.2)
    files = ("PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")
    full = make_segmenter(synthetic_shapes, tmp_path / "full", *files, epochs=2)
    full.run_code_for_training_for_semantic_segmentation(net, loss="mse", seed=3, checkpoint_every=4, checkpoint_seconds=0, progress=False)
    part = make_segmenter(synthetic_shapes, tmp_path / "part", *files, epochs=2)
    good = _crash_loader(part, at_item=33)  # the 9th batch of 4
    with pytest.raises(RuntimeError, match="simulated crash"):
        part.run_code_for_training_for_semantic_segmentation(net, loss="mse", seed=3, checkpoint_every=4, checkpoint_seconds=0, progress=False)
    ck = torch.load(tmp_path / "part" / "saved_model.ckpt", weights_only=True)
    assert ck["iteration"] == 8 and ck["epoch"] == 1 and ck["batch"] == 2
    part.train_dataloader = good
    part.run_code_for_training_for_semantic_segmentation(net, loss="mse", seed=3, checkpoint_every=4, checkpoint_seconds=0, resume=True, progress=False)
    assert part.history["loss"] == full.history["loss"]
    a = torch.load(tmp_path / "full" / "saved_model", weights_only=True)
    b = torch.load(tmp_path / "part" / "saved_model", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_without_seed_continues_mid_epoch(synthetic_shapes, tmp_path):
    """Bug: a 6-batch epoch stopped at iteration 4 ran 8 iterations after resuming (the epoch again in full)."""
    seg = make_segmenter(synthetic_shapes, tmp_path, "PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")
    good = _crash_loader(seg, at_item=17)  # the 5th batch: iterations 1-4 done, checkpoint at 4
    with pytest.raises(RuntimeError, match="simulated crash"):
        seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), checkpoint_every=2, checkpoint_seconds=0, progress=False)
    seg.train_dataloader = good
    with pytest.warns(UserWarning, match="without a seed"):
        h = seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), checkpoint_every=2, checkpoint_seconds=0, resume=True,
                                                                progress=False)
    assert h["iteration"] == [1, 2, 3, 4, 5, 6] and h["epoch"] == [1] * 6


def test_resume_with_other_options_is_refused(synthetic_shapes, tmp_path):
    """Bug: resuming with another loss silently kept the first run's loss name in the history."""
    seg = make_segmenter(synthetic_shapes, tmp_path, "PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")
    seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), loss="mse", seed=0, max_iters=2, progress=False)
    card_before = (tmp_path / "saved_model.json").read_bytes()
    with pytest.raises(ValueError, match=r"other options \(loss: checkpoint 'mse', now 'dice'\)"):
        seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), loss="dice", seed=0, max_iters=2,
                                                            resume=True, progress=False)
    assert (tmp_path / "saved_model.json").read_bytes() == card_before
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        other = make_segmenter(synthetic_shapes, tmp_path / "fresh", "PurdueShapes5MultiObject-24-train.gz",
                               "PurdueShapes5MultiObject-8-test.gz")
        other.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), resume=True, progress=False)


def test_bad_loss_leaves_the_run_folder_as_it_was(synthetic_shapes, tmp_path):
    """Bug: the card was written before the loss was checked, and no longer matched the weights."""
    seg = make_segmenter(synthetic_shapes, tmp_path, "PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")
    seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), max_iters=1, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("saved_model*")}
    with pytest.raises(ValueError, match="unknown loss 'msee'"):
        seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=8), loss="msee", progress=False)
    with pytest.raises(ValueError, match="--optimizer must be one of sgd, adam, adamw"):
        seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=8), optimizer="lbfgs", progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("saved_model*")} == before
    fresh = make_segmenter(synthetic_shapes, tmp_path / "new", "PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")
    with pytest.raises(ValueError, match="unknown loss"):
        fresh.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), loss="msee", progress=False)
    assert not list((tmp_path / "new").glob("saved_model*"))


def test_nan_loss_stops_with_iteration_and_keeps_checkpoint(synthetic_shapes, tmp_path):
    seg = make_segmenter(synthetic_shapes, tmp_path, "PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")
    loss, _ = loss_turning(float("nan"), at=3)
    with pytest.raises(NonFiniteLossError, match="nan at iteration 3 .*saved_model.ckpt"):
        seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), loss=loss, checkpoint_every=2, checkpoint_seconds=0, progress=False)
    ck = torch.load(tmp_path / "saved_model.ckpt", weights_only=True)
    assert ck["iteration"] == 2 and all(torch.isfinite(v).all() for v in ck["model"].values() if v.is_floating_point())


def test_options_are_checked(synthetic_shapes, tmp_path):
    seg = make_segmenter(synthetic_shapes, tmp_path, "PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")
    with pytest.raises(ValueError, match="--max-iters must be an int >= 1"):
        seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), max_iters=0)
    with pytest.raises(ValueError, match="unknown option.*bogus"):
        seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), bogus=1)
    with pytest.raises(ValueError, match="unknown loss"):
        seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), loss="l1")


def test_subset_and_normalized_masks(synthetic_shapes, tmp_path):
    seg = make_segmenter(synthetic_shapes, tmp_path, "PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")
    h = seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), loss="dice", train_subset=8, seed=0,
                                                            normalize_masks=True, progress=False)
    assert len(h["loss"]) == 2
    assert json.loads((tmp_path / "saved_model.json").read_text())["normalize_masks"] is True


@pytest.mark.parametrize("bad,match", [(lambda o, t: ((o - t) ** 2).mean().item(), "got float"),
                                       (lambda o, t: (o - t) ** 2, r"got \(4, 5, 64, 64\)")])
def test_callable_loss_must_return_a_scalar_tensor(synthetic_shapes, tmp_path, bad, match):
    seg = make_segmenter(synthetic_shapes, tmp_path, "PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")
    with pytest.raises(ValueError, match=f"scalar tensor.*{match}"):
        seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), loss=bad, progress=False)


def test_nan_stop_never_names_an_older_runs_checkpoint(synthetic_shapes, tmp_path):
    """Bug: in a folder holding an older run, the NaN stop named that run's .ckpt as the last good one."""
    seg = make_segmenter(synthetic_shapes, tmp_path, "PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")
    seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), max_iters=2, progress=False)
    assert (tmp_path / "saved_model.ckpt").is_file()
    with pytest.raises(NonFiniteLossError, match="nan at iteration 1 .*this run wrote no checkpoint yet"):
        seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), loss=lambda o, t: (o * float("nan")).mean(),
                                                            progress=False)


def test_failed_rerun_keeps_the_performance_numbers(synthetic_shapes, tmp_path):
    """Bug: performance_numbers was truncated at the start, so a failed re-run erased the previous one's."""
    seg = make_segmenter(synthetic_shapes, tmp_path, "PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")
    perf = tmp_path / "perf.txt"
    seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), log_every=2, perf_file=str(perf), progress=False)
    before = perf.read_text()
    assert before.count("\n") == 3
    _crash_loader(seg, at_item=2)
    with pytest.raises(RuntimeError, match="simulated crash"):
        seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), log_every=2, perf_file=str(perf), progress=False)
    assert perf.read_text() == before


class _Interrupt(_Crash):
    def __getitem__(self, i):
        self.n += 1
        if self.n == self.at:
            raise KeyboardInterrupt
        return self.dataset[i]


def test_interrupt_writes_a_checkpoint_and_resume_continues(synthetic_shapes, tmp_path):
    seg = make_segmenter(synthetic_shapes, tmp_path, "PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")
    good = seg.train_dataloader
    seg.train_dataloader = torch.utils.data.DataLoader(_Interrupt(good.dataset, 13), batch_size=4, shuffle=True)
    with pytest.raises(KeyboardInterrupt):  # Ctrl-C during the 4th batch, checkpoints only every 500
        seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), seed=1, progress=False)
    assert torch.load(tmp_path / "saved_model.ckpt", weights_only=True)["iteration"] == 3
    seg.train_dataloader = good
    h = seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), seed=1, resume=True, progress=False)
    assert h["iteration"] == [1, 2, 3, 4, 5, 6]


def test_modern_recipe_trains_on_logits_and_scores_with_logit_zero(synthetic_shapes, tmp_path):
    seg = make_segmenter(synthetic_shapes, tmp_path, "PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")
    seen = {}

    class Spy(mUNetASPP):  # records what the network is fed
        def forward(self, x):
            seen["max"] = max(seen.get("max", 0.0), float(x.max()))
            return super().forward(x)

    h = seg.run_code_for_training_for_semantic_segmentation(Spy(depth=4, head="dense"), recipe="modern", max_iters=3, seed=0, progress=False,
                                                            grad_clip=0.5)
    assert h["loss_name"] == "BCE+Dice" and set(h["components"]) == {"bce", "dice"}
    assert seen["max"] <= 1.0  # input_scale 1/255
    card = json.loads((tmp_path / "saved_model.json").read_text())
    assert card["output"] == "logits" and card["thresholds"] == [0.0] * 5 and card["spec"]["recipe"] == "modern"
    assert card["input_scale"] == pytest.approx(1 / 255) and card["model"]["head"] == "dense"
    assert (card["spec"]["depth"], card["spec"]["aspp"]) == (4, True)  # the spec records the network given
    m = seg.run_code_for_testing_semantic_segmentation(mUNetASPP(depth=4, head="dense"), progress=False)
    assert m["binarize"]["thresholds"] == [0.0] * 5 and m["binarize"]["output"] == "logits"


def test_a_second_signal_stops_at_once_without_a_new_checkpoint(synthetic_shapes, tmp_path, monkeypatch):
    import os
    import signal

    from dlstudio_aspp import stopping, training

    real_init = training._Run.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        self.probe = lambda where: os.kill(os.getpid(), signal.SIGINT) if where in ("forward", "optimizer") \
            and self.it == 1 else None

    monkeypatch.setattr(training._Run, "__init__", init)
    seg = make_segmenter(synthetic_shapes, tmp_path, "PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")
    with pytest.raises(KeyboardInterrupt) as e:
        seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), seed=0, max_iters=4, progress=False,
                                                            checkpoint_every=1, checkpoint_seconds=0)
    assert not isinstance(e.value, stopping.Interrupted)
    ck = torch.load(tmp_path / "saved_model.ckpt", weights_only=True)
    assert ck["iteration"] == 1  # the step cut in half (iteration 2) was not saved


def test_resume_with_other_data_or_batch_size_is_refused(synthetic_shapes, tmp_path):
    """Bug: a checkpoint from batch size 2 resumed at batch size 4 without a word."""
    seg = make_segmenter(synthetic_shapes, tmp_path, "PurdueShapes5MultiObject-24-train.gz",
                         "PurdueShapes5MultiObject-8-test.gz", batch_size=2)
    seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), seed=0, max_iters=2, progress=False)
    other = make_segmenter(synthetic_shapes, tmp_path, "PurdueShapes5MultiObject-24-train.gz",
                           "PurdueShapes5MultiObject-8-test.gz", batch_size=4)
    with pytest.raises(ValueError, match="batch_size: checkpoint 2, now 4"):
        other.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), seed=0, max_iters=2, resume=True,
                                                              progress=False)
    sub = make_segmenter(synthetic_shapes, tmp_path, "PurdueShapes5MultiObject-24-train.gz",
                         "PurdueShapes5MultiObject-8-test.gz", batch_size=2)
    with pytest.raises(ValueError, match="data.images: checkpoint 24, now 12"):
        sub.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), seed=0, max_iters=2, resume=True,
                                                            progress=False, train_subset=12)


def test_tensorboard_writes_events_that_tensorboard_reads(synthetic_shapes, tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    from dlstudio_aspp.runner import train_and_score
    from dlstudio_aspp.spec import RunSpec

    spec = RunSpec.build("modern", data=synthetic_shapes, train_file="PurdueShapes5MultiObject-24-train.gz",
                         test_file="PurdueShapes5MultiObject-8-test.gz", depth=4, seed=0, max_iters=3, progress=False,
                         cpu=True, tensorboard=True)
    train_and_score(spec, tmp_path)
    events = EventAccumulator(str(tmp_path / "tensorboard"))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    assert {"train/loss", "train/lr", "train/bce", "train/dice", "test/miou", "test/iou/rectangle"} <= tags
    history = json.loads((tmp_path / "saved_model.history.json").read_text())
    assert [e.value for e in events.Scalars("train/loss")] == pytest.approx(history["loss"])
    assert [e.step for e in events.Scalars("train/loss")] == [1, 2, 3]


def test_log_every_longer_than_an_epoch_warns(synthetic_shapes, tmp_path):
    """Bug: with 6 iterations an epoch and log_every 8 over 12 iterations, nothing was printed and nothing said why."""
    seg = make_segmenter(synthetic_shapes, tmp_path, "PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")
    with pytest.warns(UserWarning, match=r"--log-every 8 is longer than an epoch \(6 iterations\).*--log-every 3"):
        h = seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), seed=0, epochs=2, log_every=8,
                                                                progress=False)
    assert h["running"] == []  # the lines the warning announced are indeed missing


def test_the_spec_records_the_network_given_stock_mUNet_included(synthetic_shapes, tmp_path):
    """A stock mUNet handed to the segmenter is recorded as what it is (no ASPP, its depth), whatever the recipe."""
    from dlstudio_aspp.model import StockMUNet

    seg = make_segmenter(synthetic_shapes, tmp_path, "PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")
    seg.run_code_for_training_for_semantic_segmentation(StockMUNet(skip_connections=True, depth=8), max_iters=1, seed=0,
                                                        progress=False)
    spec = json.loads((tmp_path / "saved_model.json").read_text())["spec"]
    assert (spec["depth"], spec["aspp"]) == (8, False)
