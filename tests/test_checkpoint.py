"""Checkpoints and weights read the same on any device: CPU tensors written, read onto the CPU, the random
generators and AMP's loss scaler carried over or refused in one line."""
import pytest
import torch

from dlstudio_aspp import checkpoint


def _locations(path) -> set:
    """The device tags of every storage in a file written by torch.save (what torch.load maps from)."""
    seen = set()
    torch.load(path, map_location=lambda storage, location: seen.add(location) or storage, weights_only=True)
    return seen


def test_saved_files_hold_detached_cpu_tensors_in_the_same_structure(tmp_path):
    w = torch.nn.Parameter(torch.ones(2))
    obj = {"model": {"w": w}, "list": [torch.zeros(1), 3], "pair": (torch.ones(1), "x"), "rng": torch.get_rng_state()}
    path = checkpoint.save(obj, tmp_path / "ck")
    back = checkpoint.load(path)
    assert _locations(path) == {"cpu"}
    assert type(back["pair"]) is tuple and back["list"][1] == 3 and back["pair"][1] == "x"
    assert not back["model"]["w"].requires_grad and torch.equal(back["model"]["w"], torch.ones(2))


def test_a_file_written_on_a_gpu_loads_on_this_machine(tmp_path, monkeypatch):
    """A file whose storages are tagged cuda:0, as a GPU writes them: torch.load without map_location fails on a
    machine without one (what stock's scripts meet); checkpoint.load reads it onto the CPU."""
    path = tmp_path / "ck"
    with monkeypatch.context() as m:
        m.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save({"w": torch.arange(3.0)}, path)
    assert _locations(path) == {"cuda:0"}
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)
    assert torch.equal(checkpoint.load(path)["w"], torch.arange(3.0))


@pytest.mark.parametrize("damage", ["cut", "not-torch"])
def test_a_damaged_file_is_one_line_naming_it(tmp_path, damage):
    path = checkpoint.save({"w": torch.ones(1000)}, tmp_path / "ck")
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2] if damage == "cut" else b"hello")
    with pytest.raises(ValueError, match=r"ck is not a readable checkpoint \(\w+: cut short, or not written by "
                                         r"dlstudio-aspp\); restore it from a copy, or delete it and train again"):
        checkpoint.load(path)


def test_the_random_generators_are_restored_and_a_missing_gpu_one_is_named():
    state = checkpoint.rng_state(torch.device("cpu"))
    assert state["cuda_rng"] is None
    first = torch.rand(3)
    assert checkpoint.restore_rng(state, torch.device("cpu")) is None
    assert torch.equal(torch.rand(3), first)
    written_on_gpu = dict(state, cuda_rng=torch.zeros(16, dtype=torch.uint8))
    note = checkpoint.restore_rng(written_on_gpu, torch.device("cpu"))
    assert note == ("the checkpoint was written on a GPU and this run trains on the CPU: only the CPU's random "
                    "numbers carry over")
    assert torch.equal(torch.rand(3), first)  # the CPU generator was still restored


def test_amp_on_one_side_and_off_on_the_other_is_a_note_not_a_traceback():
    """Bug: an --amp checkpoint from a CPU (whose scaler is off, its state {}) resumed on a GPU made
    GradScaler.load_state_dict({}) raise."""
    on = torch.amp.GradScaler("cpu", enabled=True)
    off = torch.amp.GradScaler("cpu", enabled=False)
    assert checkpoint.restore_scaler(on, {}) == ("the checkpoint was written without mixed precision: AMP's loss "
                                                 "scale starts afresh")
    assert on.get_scale() == 65536.0
    assert checkpoint.restore_scaler(off, {"scale": 1024.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                                           "growth_interval": 2000, "_growth_tracker": 0}) == (
        "the checkpoint was written with mixed precision on a GPU: training goes on in float32")
    saved = torch.amp.GradScaler("cpu", enabled=True, init_scale=1024.0)
    assert checkpoint.restore_scaler(on, saved.state_dict()) is None and on.get_scale() == 1024.0


def _ck(value: float, iteration: int) -> dict:
    return {"model": {"w": torch.full((4096,), value)}, "iteration": iteration, "history": {"loss": [0.5, 0.25]}}


def test_a_flipped_bit_that_torch_load_reads_silently_is_caught_by_the_digest(tmp_path):
    path = checkpoint.save_checkpoint(_ck(1.2345, 3), tmp_path / "ck", tmp_path / "ck.prev")
    data = bytearray(path.read_bytes())
    at = data.find(torch.full((4,), 1.2345).numpy().tobytes()) + 1000  # inside the tensor's raw bytes
    data[at] ^= 0x10
    path.write_bytes(bytes(data))
    assert not torch.equal(torch.load(path, weights_only=True)["model"]["w"], torch.full((4096,), 1.2345))
    with pytest.raises(ValueError, match="is damaged: its contents do not match the sha256"):
        checkpoint.load_checkpoint(path)


def test_a_cut_file_is_one_error(tmp_path):
    path = checkpoint.save_checkpoint(_ck(1.0, 1), tmp_path / "ck", tmp_path / "ck.prev")
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="is not a readable checkpoint"):
        checkpoint.load_checkpoint(path)


def test_the_previous_checkpoint_is_kept_and_the_newest_good_one_wins(tmp_path):
    path, prev = tmp_path / "ck", tmp_path / "ck.prev"
    checkpoint.save_checkpoint(_ck(1.0, 2), path, prev)
    assert not prev.exists()
    checkpoint.save_checkpoint(_ck(2.0, 4), path, prev)
    assert checkpoint.load_checkpoint(prev)["iteration"] == 2 and checkpoint.load_checkpoint(path)["iteration"] == 4
    ck, used, skipped = checkpoint.newest_good([path, prev])
    assert used == path and ck["iteration"] == 4 and skipped == []
    path.write_bytes(path.read_bytes()[:100])
    ck, used, skipped = checkpoint.newest_good([path, prev])
    assert used == prev and ck["iteration"] == 2 and len(skipped) == 1 and str(path) in skipped[0]
    prev.write_bytes(b"")
    with pytest.raises(ValueError, match=r"no good checkpoint in .*ck is not a readable.*ck.prev is not a readable"):
        checkpoint.newest_good([path, prev])
    with pytest.raises(FileNotFoundError, match="there is no checkpoint"):
        checkpoint.newest_good([tmp_path / "none", tmp_path / "none.prev"])
    assert not list(tmp_path.glob("*.part"))


def test_a_checkpoint_from_before_digests_still_loads(tmp_path):
    path = checkpoint.save(_ck(1.0, 1), tmp_path / "old")
    assert checkpoint.load_checkpoint(path)["iteration"] == 1


def test_a_checkpoints_options_come_from_its_cards_spec_or_from_the_older_options_key():
    from dlstudio_aspp.spec import RunSpec

    spec = RunSpec(lr=0.01)
    ck = {"card": {"spec": spec.to_json()}}
    assert checkpoint.saved_options(ck) == spec.result_values()
    assert checkpoint.differences(ck, spec.result_values(), {}, {}) == ""
    old = {"options": dict(spec.result_values(), lr=0.5), "card": {"spec": spec.to_json()}}  # before the spec was stored once
    assert checkpoint.differences(old, spec.result_values(), {}, {}) == "lr: checkpoint 0.5, now 0.01"
