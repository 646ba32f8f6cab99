"""Exact resume under every recipe users run: a run stopped by a signal anywhere in a step and resumed ends
with the weights, optimizer state, schedule, validation record and history of the run that was never stopped."""
import json
import os
import signal

import pytest
import torch

from conftest import make_dls, make_segmenter
from dlstudio_aspp import cli, stopping, training
from dlstudio_aspp.model import mUNetASPP

SYN = ("PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")
POINTS = ["start", "forward", "backward", "optimizer", "schedule", "end"]
#: Each recipe with what it turns on, cut to 8 iterations over 2-3 epochs; every run logs and validates
#: every 2 iterations, so a stop at iteration 4 lands on a log line and a validation.
RECIPES = {
    "stock": dict(loss="mse", log_every=2),
    "modern": dict(loss="dice+mse:auto", val_split=0.25, val_every=2, log_every=2),  # AdamW, one-cycle, clipping
    "coco": dict(val_split=0.25, val_every=2, log_every=2, copy_paste=0.5),            # + standard augmentation
}


def signal_inside_step(monkeypatch, point: str, step: int, sig=signal.SIGTERM) -> None:
    """Every training run from now on sends ``sig`` to itself at ``point`` inside its ``step``-th step."""
    real_init = training._Run.__init__

    def init(self, *a, **k):
        real_init(self, *a, **k)
        starts = []

        def probe(where):
            starts.append(where == "start")
            if where == point and sum(starts) == step:
                os.kill(os.getpid(), sig)

        self.probe = probe

    monkeypatch.setattr(training._Run, "__init__", init)


def assert_same_run(a_folder, b_folder, history_extra=()) -> None:
    """Two finished run folders hold bit-equal weights, optimizer and schedule state, validation and history
    (but its time, and ``history_extra``: keys only an older format wrote)."""
    a = torch.load(a_folder / "saved_model.ckpt", weights_only=True)
    b = torch.load(b_folder / "saved_model.ckpt", weights_only=True)
    assert a["model"].keys() == b["model"].keys()
    assert all(torch.equal(a["model"][k], b["model"][k]) for k in a["model"])
    assert _tensors_equal(a["optimizer"], b["optimizer"]), "optimizer state differs"
    assert a["scheduler"] == b["scheduler"] and a["scaler"] == b["scaler"] and a["loss_state"] == b["loss_state"]
    assert _tensors_equal(a["validation"], b["validation"]), "validation record differs"
    ha, hb = dict(a["history"]), dict(b["history"])
    for key in ("seconds",) + tuple(history_extra):
        ha.pop(key, None), hb.pop(key, None)
    assert ha == hb
    final_a = torch.load(a_folder / "saved_model", weights_only=True)
    final_b = torch.load(b_folder / "saved_model", weights_only=True)
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)


def _tensors_equal(a, b) -> bool:
    if torch.is_tensor(a):
        return torch.is_tensor(b) and a.dtype == b.dtype and torch.equal(a, b)
    if isinstance(a, dict):
        return isinstance(b, dict) and a.keys() == b.keys() and all(_tensors_equal(a[k], b[k]) for k in a)
    if isinstance(a, (list, tuple)):
        return isinstance(b, (list, tuple)) and len(a) == len(b) and all(_tensors_equal(x, y) for x, y in zip(a, b))
    return a == b


def _segmenter(recipe, data, folder):
    if recipe != "coco":
        return make_segmenter(data, folder, *SYN, epochs=2)
    from dlstudio_aspp.data.coco import COCOSegmentationDataset
    from dlstudio_aspp.segmentation import SemanticSegmentationASPP

    dls = make_dls(data, folder, epochs=2)
    seg = SemanticSegmentationASPP(dl_studio=dls, max_num_objects=5)
    seg.load_PurdueShapes5MultiObject_dataset(COCOSegmentationDataset(dls, seg, "train"),
                                              COCOSegmentationDataset(dls, seg, "test"), num_workers=0)
    return seg


class _Uninterrupted:
    """recipe -> (data folder, the network, the folder of its run that was never stopped), each made when first
    asked for: the stock and modern recipes need only the synthetic set, so they run without ../shared's COCO."""

    def __init__(self, request, tmp_path_factory) -> None:
        self.request, self.factory, self.made = request, tmp_path_factory, {}

    def __getitem__(self, recipe):
        if recipe not in self.made:
            fixture = "coco_tiny_person" if recipe == "coco" else "synthetic_shapes"
            data = self.request.getfixturevalue(fixture)
            torch.manual_seed(0)
            net = mUNetASPP(depth=4, aspp_dropout=0.2, num_classes=1 if recipe == "coco" else 5,
                            head="stock" if recipe == "stock" else "dense")  # dropout: the RNG must resume too
            folder = self.factory.mktemp(f"full-{recipe}")
            _segmenter(recipe, data, folder).run_code_for_training_for_semantic_segmentation(
                net, recipe=recipe, seed=3, max_iters=8, checkpoint_every=0, progress=False, **RECIPES[recipe])
            self.made[recipe] = data, net, folder
        return self.made[recipe]


@pytest.fixture(scope="module")
def uninterrupted(request, tmp_path_factory):
    return _Uninterrupted(request, tmp_path_factory)


@pytest.mark.parametrize("recipe", list(RECIPES))
@pytest.mark.parametrize("point", POINTS)
@pytest.mark.slow
def test_a_signal_anywhere_in_a_step_resumes_bit_for_bit(uninterrupted, recipe, point, tmp_path, monkeypatch):
    """Bug: SIGTERM became KeyboardInterrupt wherever it landed; between the optimizer step and the iteration
    count, the checkpoint said iteration 2 and held the weights after 3 steps. Bug: a stop on a validation
    iteration skipped that validation after the resume, and the running loss of a log line restarted at 0."""
    data, net, full = uninterrupted[recipe]
    opts = dict(recipe=recipe, seed=3, max_iters=8, checkpoint_every=0, progress=False, **RECIPES[recipe])
    part = _segmenter(recipe, data, tmp_path)
    signal_inside_step(monkeypatch, point, step=4)
    with pytest.raises(stopping.Interrupted, match="SIGTERM: stopped at iteration 4"):
        part.run_code_for_training_for_semantic_segmentation(net, **opts)
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    ck = torch.load(tmp_path / "saved_model.ckpt", weights_only=True)
    assert ck["iteration"] == 4 and ck["history"]["iteration"] == [1, 2, 3, 4]
    if recipe != "stock":
        assert [it for it, _ in ck["validation"]["history"]] == [2, 4]  # the stopped iteration's validation ran
    part.run_code_for_training_for_semantic_segmentation(net, resume=True, **opts)
    assert_same_run(full, tmp_path)


def test_a_stop_between_log_lines_keeps_the_running_loss(synthetic_shapes, tmp_path, monkeypatch):
    """Bug: the running loss was a local sum, so a line after a resume averaged only the iterations since."""
    opts = dict(loss="mse", seed=1, max_iters=6, log_every=3, checkpoint_every=0, progress=False)
    torch.manual_seed(0)
    net = mUNetASPP(depth=4)
    full = make_segmenter(synthetic_shapes, tmp_path / "full", *SYN)
    full.run_code_for_training_for_semantic_segmentation(net, **opts)
    part = make_segmenter(synthetic_shapes, tmp_path / "part", *SYN)
    signal_inside_step(monkeypatch, "end", step=2, sig=signal.SIGHUP)  # a closed terminal stops as cleanly
    with pytest.raises(stopping.Interrupted, match="SIGHUP: stopped at iteration 2"):
        part.run_code_for_training_for_semantic_segmentation(net, **opts)
    monkeypatch.undo()
    h = part.run_code_for_training_for_semantic_segmentation(net, resume=True, **opts)
    assert h["running"] == full.history["running"] and len(h["running"]) == 2
    assert h["running"][0][1] == pytest.approx(sum(h["loss"][:3]) / 3, rel=1e-12)


def _cli_run(args, out, monkeypatch=None, point=None):
    if point is not None:
        signal_inside_step(monkeypatch, point, step=3)
    rc = cli.main(["run", *args, "--out", str(out), "--seed", "5", "--max-iters", "7", "--checkpoint-every", "0",
                   "--cpu", "--no-progress", "--depth", "4", "--log-every", "2"])
    if monkeypatch is not None:
        monkeypatch.undo()
    return rc


@pytest.mark.parametrize("kind", ["modern", "coco"])
@pytest.mark.slow
def test_run_interrupted_and_resumed_from_the_command_line_ends_as_if_never_stopped(kind, syn, coco_tiny_person,
                                                                                   tmp_path, monkeypatch):
    """`run` (modern: dice+mse:auto and a validation split; coco: its recipe on real photographs), stopped by
    SIGTERM in its third step, then `run --resume`: the same weights, state and history as one uninterrupted run."""
    if kind == "modern":
        args = syn + ["--loss", "dice+mse:auto", "--val-split", "0.25", "--val-every", "3"]
    else:
        args = ["--dataset", "coco", "--data", coco_tiny_person, "--val-split", "0.25", "--val-every", "3", "--copy-paste", "0.5",
                "--test-subset", "4"]
    assert _cli_run(args, tmp_path / "full") == 0
    assert _cli_run(args, tmp_path / "part", monkeypatch, point="backward") == 130
    monkeypatch.chdir(tmp_path)
    card = json.loads((tmp_path / "full" / "saved_model.json").read_text())
    assert card["spec"]["recipe"] == kind and card["validation"]["images"] >= 2
    stopped = torch.load(tmp_path / "part" / "saved_model.ckpt", weights_only=True)["history"]["seconds"]
    assert _cli_run(args + ["--resume"], tmp_path / "part") == 0
    assert_same_run(tmp_path / "full", tmp_path / "part")
    resumed = json.loads((tmp_path / "part" / "saved_model.json").read_text())
    commands = resumed["provenance"]["commands"]  # both commands that trained it; the times add up
    assert len(commands) == 2 and "--resume" not in commands[0].split() and "--resume" in commands[1].split()
    assert resumed["seconds"]["train"] > stopped > 0
    from dlstudio_aspp.run_report import section

    appendix = "\n".join(section("appendix", tmp_path / "part"))  # the report's appendix lists both commands
    assert appendix.index(commands[0]) < appendix.index(commands[1])
    full_m = json.loads((tmp_path / "full" / "saved_model.metrics.json").read_text())
    part_m = json.loads((tmp_path / "part" / "saved_model.metrics.json").read_text())
    assert full_m["confusion"] == part_m["confusion"] and full_m["iou"] == part_m["iou"]


def test_resume_with_other_data_of_the_same_size_is_refused(tmp_path):
    """Same file names and image count, other pictures: the checkpoint's data identity tells them apart."""
    from dlstudio_aspp.data.sources import make_shapes

    make_shapes(tmp_path / "a", train=12, test=4, seed=0)
    make_shapes(tmp_path / "b", train=12, test=4, seed=1)
    files = ("PurdueShapes5MultiObject-12-train.gz", "PurdueShapes5MultiObject-4-test.gz")
    seg = make_segmenter(str(tmp_path / "a") + "/", tmp_path / "run", *files)
    seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), seed=0, max_iters=2, progress=False)
    other = make_segmenter(str(tmp_path / "b") + "/", tmp_path / "run", *files)
    with pytest.raises(ValueError, match=r"cannot resume .*other options \(data\.sha256: checkpoint '[0-9a-f]{64}', "
                                         r"now '[0-9a-f]{64}'"):
        other.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), seed=0, max_iters=2, resume=True,
                                                              progress=False)


def _stopped_at_step_4(uninterrupted, tmp_path, monkeypatch):
    """The modern run stopped by SIGTERM after its fourth step in ``tmp_path``: (a function that resumes it, the
    uninterrupted run's folder, the checkpoint's path, the checkpoint read back)."""
    data, net, full = uninterrupted["modern"]
    opts = dict(recipe="modern", seed=3, max_iters=8, checkpoint_every=0, progress=False, **RECIPES["modern"])
    part = _segmenter("modern", data, tmp_path)
    signal_inside_step(monkeypatch, "end", step=4)
    with pytest.raises(stopping.Interrupted):
        part.run_code_for_training_for_semantic_segmentation(net, **opts)
    monkeypatch.undo()
    monkeypatch.chdir(tmp_path)
    path = tmp_path / "saved_model.ckpt"
    ck = torch.load(path, weights_only=True)
    return (lambda: part.run_code_for_training_for_semantic_segmentation(net, resume=True, **opts)), full, path, ck


@pytest.mark.slow
def test_a_checkpoint_written_on_a_gpu_resumes_on_this_cpu(uninterrupted, tmp_path, monkeypatch, capsys):
    """Bug (on a card): checkpoints were read with map_location set to the run's device, so on CUDA the CPU
    generator's state came back as a CUDA tensor and every resume crashed (TypeError: RNG state must be a
    torch.ByteTensor), and a checkpoint from a GPU could not be read without one. Here the stopped run's checkpoint
    is rewritten as a GPU writes it: every storage tagged cuda:0, a CUDA generator's state beside the CPU's."""
    resume, full, path, ck = _stopped_at_step_4(uninterrupted, tmp_path, monkeypatch)
    ck["cuda_rng"] = torch.zeros(16, dtype=torch.uint8)
    from dlstudio_aspp.checkpoint import DIGEST, digest

    ck[DIGEST] = digest(ck)  # as the GPU's own save would have written it
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(ck, path)
    capsys.readouterr()
    real_load = torch.load

    def onto_the_cpu_only(f, map_location=None, **kw):  # on a card, any other target hands back CUDA tensors
        assert map_location == "cpu", f"checkpoint read onto {map_location!r}, not the CPU"
        return real_load(f, map_location=map_location, **kw)

    monkeypatch.setattr(torch, "load", onto_the_cpu_only)
    resume()
    monkeypatch.setattr(torch, "load", real_load)
    out = capsys.readouterr().out
    assert "resumed from" in out and "the checkpoint was written on a GPU and this run trains on the CPU" in out
    assert_same_run(full, tmp_path)


@pytest.mark.slow
def test_a_checkpoint_in_the_format_that_copied_the_options_resumes(uninterrupted, tmp_path, monkeypatch):
    """Checkpoints before the spec was stored once carried the result options under ``options`` and the whole
    spec in the history: such a checkpoint resumes to the uninterrupted run's weights."""
    from dlstudio_aspp.checkpoint import DIGEST, digest
    from dlstudio_aspp.spec import RunSpec

    resume, full, path, ck = _stopped_at_step_4(uninterrupted, tmp_path, monkeypatch)
    assert "options" not in ck and "options" not in ck["history"]  # today's format: the card's spec only
    spec = ck["card"]["spec"]
    ck["options"], ck["history"]["options"] = RunSpec.from_json(spec).result_values(), dict(spec)
    ck[DIGEST] = digest(ck)
    torch.save(ck, path)
    resume()
    assert_same_run(full, tmp_path, history_extra=("options",))


@pytest.mark.parametrize("damage", ["cut in half", "one byte flipped"])
@pytest.mark.slow
def test_a_damaged_newest_checkpoint_resumes_from_the_one_before(damage, syn, tmp_path, monkeypatch, capsys):
    """The checkpoint written when SIGTERM stopped the run is damaged; `--resume` says so in one line, goes on from
    the previous checkpoint and ends on the uninterrupted run's weights."""
    every = ["--checkpoint-every", "2", "--checkpoint-seconds", "0"]

    def run(out, *extra, point=None):
        if point:
            signal_inside_step(monkeypatch, point, step=6)
        rc = cli.main(["run", *syn, "--out", str(out), "--seed", "5", "--max-iters", "8", "--cpu", "--no-progress",
                       *every, *extra])
        monkeypatch.undo()
        return rc

    assert run(tmp_path / "full") == 0
    assert run(tmp_path / "part", point="backward") == 130
    ckpt, prev = tmp_path / "part" / "saved_model.ckpt", tmp_path / "part" / "saved_model.ckpt.prev"
    assert torch.load(ckpt, weights_only=True)["iteration"] == 6 and torch.load(prev, weights_only=True)["iteration"] == 4
    data = bytearray(ckpt.read_bytes())
    if damage == "cut in half":
        data = data[: len(data) // 2]
    else:
        at = data.find(torch.load(ckpt, weights_only=True)["model"]["conv_in.weight"].numpy().tobytes()[:64])
        data[at + 7] ^= 0x01
    ckpt.write_bytes(bytes(data))
    capsys.readouterr()
    assert run(tmp_path / "part", "--resume") == 0
    out = capsys.readouterr().out
    assert "skipped" in out and "going on from the checkpoint before it, saved_model.ckpt.prev" in out
    assert "resumed from" in out and "at iteration 4" in out
    final_a = torch.load(tmp_path / "full" / "saved_model", weights_only=True)
    final_b = torch.load(tmp_path / "part" / "saved_model", weights_only=True)
    assert all(torch.equal(final_a[k], final_b[k]) for k in final_a)
