"""The fast paths change nothing but speed: compiled steps, device-resident batches, no per-step host sync,
checkpoints by time, quiet DataLoader workers."""
import json
import math
import shutil
import sys
import warnings

import pytest
import torch

from conftest import loss_turning, make_segmenter
from dlstudio_aspp import accel, training
from dlstudio_aspp.model import mUNetASPP

FILES = ("PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz")


def _train(synthetic_shapes, tmp_path, **options):
    seg = make_segmenter(synthetic_shapes, tmp_path, *FILES)
    torch.manual_seed(0)
    h = seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4, head="dense"), recipe="modern",
                                                            seed=0, progress=False, **options)
    return h, torch.load(tmp_path / "saved_model", weights_only=True)


needs_compiler = pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "c++", "clang++")),
                                    reason="torch.compile on CPU needs a C++ compiler (inductor); none is installed")


@needs_compiler
@pytest.mark.slow
def test_compiled_step_matches_the_eager_step(synthetic_shapes, tmp_path):
    """torch.compile (inductor on CPU) gives the same losses and weights to float tolerance.

    SGD, whose update is linear in the gradient: Adam's normalised update turns float noise in
    near-zero gradients into whole lr-sized steps, which says nothing about the compiled step."""
    sgd = dict(max_iters=3, optimizer="sgd", lr=1e-2)
    eager, w_eager = _train(synthetic_shapes, tmp_path / "eager", **sgd)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # a fallback to eager would make this test pass vacuously
        compiled, w_compiled = _train(synthetic_shapes, tmp_path / "compiled", compile=True, **sgd)
    assert compiled["loss"] == pytest.approx(eager["loss"], rel=1e-4)
    for k in w_eager:
        if w_eager[k].is_floating_point():
            torch.testing.assert_close(w_compiled[k], w_eager[k], rtol=1e-3, atol=1e-4)


def test_a_failing_compile_falls_back_with_one_warning(synthetic_shapes, tmp_path, monkeypatch):
    def broken(fn, **kw):
        def call(*a, **k):
            raise RuntimeError("no compiler here")
        return call

    monkeypatch.setattr(torch, "compile", broken)
    eager, w_eager = _train(synthetic_shapes, tmp_path / "eager", max_iters=3)
    with pytest.warns(RuntimeWarning, match=r"--compile: the compiled training step failed \(RuntimeError: no compiler "
                                            r"here\); running it eagerly for the rest of the run") as rec:
        fallback, w_fallback = _train(synthetic_shapes, tmp_path / "fallback", max_iters=3, compile=True)
    assert len([w for w in rec if "--compile" in str(w.message)]) == 1
    assert fallback["loss"] == eager["loss"] and all(torch.equal(w_eager[k], w_fallback[k]) for k in w_eager)


def _compile_with(monkeypatch, fw=None, bw=None) -> dict:
    """Make ``torch.compile`` use AOTAutograd with these forward and backward compilers (no C++ compiler needed);
    each defaults to running the traced graph as it is. Returns the count of forward graphs compiled."""
    from functorch.compile import make_boxed_func
    from torch._dynamo.backends.common import aot_autograd

    compiled = {"forward": 0}

    def as_is(gm, example_inputs):
        return make_boxed_func(gm.forward)

    def forward(gm, example_inputs):
        compiled["forward"] += 1
        return (fw or as_is)(gm, example_inputs)

    backend = aot_autograd(fw_compiler=forward, bw_compiler=bw or as_is)
    real = torch.compile
    monkeypatch.setattr(torch, "compile", lambda fn, **kw: real(fn, backend=backend, dynamic=False))
    torch._dynamo.reset()
    return compiled


@pytest.mark.slow
def test_the_backward_compiler_raising_falls_back_to_the_eager_step(synthetic_shapes, tmp_path, monkeypatch):
    """Bug (on a card): only the first forward call was guarded; the backward pass, compiled lazily on the first
    backward, crashed the run (inductor's assert_size_stride in convolution_backward). Now the whole first step
    runs inside the fallback: the forward already updated BatchNorm's running statistics, so those are put back
    and the step reruns eagerly; the run ends on the eager run's weights, bit for bit, and its card says so."""
    def broken(gm, example_inputs):
        raise RuntimeError("backward compiler broke")

    eager, w_eager = _train(synthetic_shapes, tmp_path / "eager", max_iters=3)
    _compile_with(monkeypatch, bw=broken)
    with pytest.warns(RuntimeWarning, match=r"--compile: the compiled training step failed \(RuntimeError: backward "
                                            r"compiler broke\); running it eagerly") as rec:
        fallback, w_fallback = _train(synthetic_shapes, tmp_path / "fallback", max_iters=3, compile=True)
    assert len([w for w in rec if "--compile" in str(w.message)]) == 1
    assert fallback["loss"] == eager["loss"] and all(torch.equal(w_eager[k], w_fallback[k]) for k in w_eager)
    assert fallback["compile_fallback"] == "RuntimeError: backward compiler broke"
    card = json.loads((tmp_path / "fallback" / "saved_model.json").read_text())
    assert card["provenance"]["compile_fallback"] == "RuntimeError: backward compiler broke"


@pytest.mark.slow
def test_a_compiled_step_failing_later_falls_back_there(synthetic_shapes, tmp_path, monkeypatch):
    """CUDA graphs are recorded on a later call than the one that compiles: a failure on the second call (here the
    compiled forward raising as inductor's stride assertion does) falls back there and the run finishes."""
    def fails_second(gm, example_inputs):
        calls = {"n": 0}

        def run(args):
            calls["n"] += 1
            if calls["n"] == 2:
                raise AssertionError("expected size 16==16, stride 1==4096 at dim=1")
            return gm.forward(*args)

        run._boxed_call = True
        return run

    _compile_with(monkeypatch, fw=fails_second)
    with pytest.warns(RuntimeWarning, match=r"failed \(AssertionError: expected size 16==16, stride 1==4096") as rec:
        h, _ = _train(synthetic_shapes, tmp_path, max_iters=4, compile=True)
    assert len([w for w in rec if "--compile" in str(w.message)]) == 1
    assert h["iteration"] == [1, 2, 3, 4] and all(math.isfinite(v) for v in h["loss"])


@pytest.mark.slow
def test_the_auto_dice_scale_is_measured_outside_the_compiled_step(synthetic_shapes, tmp_path, monkeypatch):
    """Bug: dice+mse:auto read its terms with float() inside the compiled step: a graph break, and a guard on the
    scale that changed every warm-up step, so dynamo recompiled until it gave up. The 20 calibration steps now run
    eagerly; the compiled step sees the frozen scale and compiles its forward once."""
    compiled = _compile_with(monkeypatch)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback
        h, _ = _train(synthetic_shapes, tmp_path, max_iters=24, loss="dice+mse:auto", compile=True)
    assert compiled["forward"] == 1
    assert len(set(h["components"]["dice_scale"][19:])) == 1  # frozen after the 20th step


@pytest.mark.slow
def test_a_serial_grid_compiles_each_run_afresh(synthetic_shapes, tmp_path, monkeypatch):
    """Each (loss, ASPP) variant is another graph: without a reset between runs, a serial grid of more than 8
    variants passed dynamo's recompile limit and the later runs stopped compiling."""
    from dlstudio_aspp.experiments import GridConfig, run_grid

    _compile_with(monkeypatch)
    resets = []
    real = torch._dynamo.reset
    monkeypatch.setattr(torch._dynamo, "reset", lambda: resets.append(1) or real())
    cfg = GridConfig.from_preset("smoke", data=synthetic_shapes, train_file=FILES[0], test_file=FILES[1],
                                 losses=["mse", "dice"], aspp=[True], seeds=[0], max_iters=2, progress=False, cpu=True,
                                 compile=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        run_grid(cfg, tmp_path / "grid")
    assert len(resets) == 2


@pytest.mark.slow
def test_the_loop_makes_no_per_step_host_sync_or_copy(synthetic_shapes, tmp_path, monkeypatch):
    """Reads of a tensor's value and copies made by this package's code do not grow with the steps, on the path
    CUDA takes (batches drawn on the device) and with the input normalised by mean and std: 3 and 6 steps make the
    same calls. Bugs found on a card: each batch's indices were copied from the host (a blocking copy), and the
    mean and std were made with new_tensor, every step."""
    calls = []
    for name in ("item", "__float__", "tolist", "to", "new_tensor"):
        real = getattr(torch.Tensor, name)

        def spy(self, *a, _real=real, _name=name, **k):
            caller = sys._getframe(1).f_globals.get("__name__", "")
            if caller.startswith("dlstudio_aspp") and (_name != "to" or _names_a_device(a, k)):
                calls.append((_name, caller))
            return _real(self, *a, **k)

        monkeypatch.setattr(torch.Tensor, name, spy)
    run_device = _force_device_batches(monkeypatch)
    counts = []
    for steps in (3, 6):
        calls.clear()
        _train(synthetic_shapes, tmp_path / str(steps), max_iters=steps, log_every=1000, checkpoint_every=0,
               normalize="dataset")
        counts.append(list(calls))
    assert run_device["used"] and counts[0] == counts[1]
    assert counts[0].count(("tolist", "dlstudio_aspp.training")) == 2  # the epoch's order and the one flush
    assert not [c for c in counts[0] if c[1] == "dlstudio_aspp.losses"]


def _names_a_device(args, kwargs) -> bool:
    """Whether a ``Tensor.to`` call can move data between devices (a device, a device name or another tensor),
    unlike a cast to a dtype on the same device."""
    return "device" in kwargs or any(isinstance(a, (torch.device, str, torch.Tensor)) for a in args)


def test_non_finite_loss_is_found_at_the_flush_with_its_iteration(synthetic_shapes, tmp_path, monkeypatch):
    from dlstudio_aspp.errors import NonFiniteLossError

    monkeypatch.setattr(training, "FLUSH_EVERY", 4)
    seg = make_segmenter(synthetic_shapes, tmp_path, *FILES)
    loss, calls = loss_turning(float("inf"), at=2)
    with pytest.raises(NonFiniteLossError, match="loss became inf at iteration 2 "):
        seg.run_code_for_training_for_semantic_segmentation(mUNetASPP(depth=4), loss=loss, max_iters=6, progress=False)
    assert calls["n"] == 4  # found at the first flush, after iteration 4, not after the run


def test_device_batches_equal_the_dataloader_batches(synthetic_shapes, tmp_path):
    seg = make_segmenter(synthetic_shapes, tmp_path, *FILES)
    dataset = torch.utils.data.Subset(seg.train_dataloader.dataset, range(10))
    order = training._seeded_order(len(dataset), seed=5, epoch=1)
    cpu = list(torch.utils.data.DataLoader(dataset, batch_size=4, sampler=order))
    dev = list(accel.device_batches(accel.device_tensors(dataset, torch.device("cpu")), order, 4))
    assert len(cpu) == len(dev) == 3
    for a, b in zip(cpu, dev):
        assert torch.equal(a["image"], b["image"]) and torch.equal(a["mask_tensor"], b["mask_tensor"])
    assert len(list(accel.device_batches(accel.device_tensors(dataset, torch.device("cpu")), order, 4, drop_last=True))) == 2


@pytest.mark.slow
def test_a_run_drawing_batches_on_the_device_trains_the_same(synthetic_shapes, tmp_path, monkeypatch):
    """The device-resident path (used on CUDA) forced on CPU: the same losses and weights as the DataLoader path."""
    base, w_base = _train(synthetic_shapes, tmp_path / "loader", max_iters=8)
    run_device = _force_device_batches(monkeypatch)
    dev, w_dev = _train(synthetic_shapes, tmp_path / "device", max_iters=8)
    assert run_device["used"] and dev["loss"] == base["loss"]
    assert all(torch.equal(w_base[k], w_dev[k]) for k in w_base)


def _force_device_batches(monkeypatch):
    """Make training keep the arrays on the (CPU) device as it does on CUDA; the loop's own batcher then draws there."""
    used = {"used": False}
    real = training._epoch_batches

    def batches(run, loader, dataset, epoch, start_batch):
        if run.device_arrays is None:
            run.device_arrays = accel.device_tensors(dataset, torch.device("cpu"))
        used["used"] = True
        return real(run, loader, dataset, epoch, start_batch)

    monkeypatch.setattr(training, "_epoch_batches", batches)
    return used


def test_checkpoints_are_spaced_by_time(synthetic_shapes, tmp_path, monkeypatch):
    clock = {"t": 0.0}
    saved = []
    real_step, real_save = training._Run.step, training._Run.save_checkpoint

    def step(self, data):
        clock["t"] += 10.0  # every step takes 10 fake seconds
        return real_step(self, data)

    def save(self):
        saved.append(self.it)
        return real_save(self)

    monkeypatch.setattr(training, "_clock", lambda: clock["t"])
    monkeypatch.setattr(training._Run, "step", step)
    monkeypatch.setattr(training._Run, "save_checkpoint", save)
    _train(synthetic_shapes, tmp_path, max_iters=10, checkpoint_every=1, checkpoint_seconds=25)
    assert saved == [1, 4, 7, 10, 10]  # due every iteration, at most one per 25 s; the end always saves


def test_workers_ignore_stop_signals():
    import signal

    old = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    try:
        accel.quiet_worker(0)
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_IGN and signal.getsignal(signal.SIGINT) == signal.SIG_IGN
    finally:
        signal.signal(signal.SIGTERM, old[0])
        signal.signal(signal.SIGINT, old[1])


def test_device_tensors_look_through_nested_subsets(synthetic_shapes, tmp_path):
    """A training subset split again for validation: the arrays are still found, in the right order."""
    seg = make_segmenter(synthetic_shapes, tmp_path, *FILES)
    base = seg.train_dataloader.dataset
    nested = torch.utils.data.Subset(torch.utils.data.Subset(base, [5, 3, 9, 1]), [2, 0])  # base items 9, 5
    images, masks = accel.device_tensors(nested, torch.device("cpu"))
    assert torch.equal(images, base.images[[9, 5]]) and torch.equal(masks, base.masks[[9, 5]])


@needs_compiler
@pytest.mark.slow
def test_scoring_with_compile_gives_the_eager_scores(trained_run):
    """`--compile` scoring (inductor on CPU) counts the same pixels as eager scoring, to a few pixels of float noise."""
    from dlstudio_aspp.card import RunCard
    from dlstudio_aspp.data.open import open_datasets
    from dlstudio_aspp.evaluation import evaluate
    from dlstudio_aspp.spec import RunSpec

    card = RunCard.load(trained_run)
    _, test = open_datasets(RunSpec.from_json(card.spec))
    loader = torch.utils.data.DataLoader(test, batch_size=4)
    net = card.load_model()
    eager = evaluate(net, loader, card, "cpu", progress=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no silent fallback to eager
        compiled = evaluate(net, loader, card, "cpu", progress=False, compile=True)
    assert compiled["num_images"] == eager["num_images"] == len(test)
    diff = torch.tensor(compiled["confusion"]) - torch.tensor(eager["confusion"])
    assert diff.abs().sum() <= 8 and compiled["iou"] == pytest.approx(eager["iou"], abs=1e-3, nan_ok=True)


def test_the_optimizer_is_fused_on_cuda_only():
    """On CUDA a fused optimizer steps every parameter in one kernel, and GradScaler then checks for inf without
    a host sync; on the CPU it stays torch's default, so CPU runs keep their weights bit for bit."""
    from dlstudio_aspp.optim import make_optimizer
    from dlstudio_aspp.spec import RunSpec

    net = torch.nn.Linear(2, 2)
    for optimizer in ("sgd", "adam", "adamw"):
        spec = RunSpec(optimizer=optimizer)
        assert make_optimizer(net, spec, torch.device("cuda")).defaults["fused"] is True
        assert not make_optimizer(net, spec, torch.device("cpu")).defaults.get("fused")


def test_the_package_compiles_without_syntax_warnings():
    """Bug: an invalid escape sequence in a docstring (accel.py) printed a SyntaxWarning on Python 3.12."""
    from pathlib import Path

    import dlstudio_aspp

    root = Path(dlstudio_aspp.__file__).parent
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for path in sorted(root.rglob("*.py")):
            compile(path.read_text(encoding="utf-8"), str(path), "exec")
