"""Without --address the grid starts its own local Ray, whatever RAY_ADDRESS says."""
import pytest

import ray

from dlstudio_aspp.experiments import GridConfig  # noqa: E402
from dlstudio_aspp.ray_executor import run_grid_ray  # noqa: E402


@pytest.mark.slow
def test_ray_address_in_the_environment_is_not_joined(synthetic_shapes, tmp_path, monkeypatch):
    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:9")  # a cluster that does not exist (another user's, say)
    cfg = GridConfig.from_preset("smoke", data=synthetic_shapes, train_file="PurdueShapes5MultiObject-24-train.gz",
                                 test_file="PurdueShapes5MultiObject-8-test.gz", losses=["mse"], aspp=[True], seeds=[0],
                                 max_iters=1, progress=False, cpu=True)
    results = run_grid_ray(cfg, tmp_path, cpus_per_run=1, num_cpus=1)
    assert "miou" in results["mse__aspp-on__seed-0"]
    assert not ray.is_initialized()  # the private Ray it started is shut down again


@pytest.mark.slow
def test_a_sigkilled_worker_is_retried_from_its_checkpoint_and_the_grid_completes(synthetic_shapes, tmp_path, capsys):
    """The worker process training a run is SIGKILLed (as the out-of-memory killer does) after the run wrote a
    checkpoint: the grid retries the run, which goes on from that checkpoint, and ends on the weights of a grid that
    was never disturbed."""
    import hashlib
    import json
    import os
    import signal
    import subprocess
    import threading
    import time

    if ray.is_initialized():
        ray.shutdown()
    cfg = GridConfig.from_preset("smoke", data=synthetic_shapes, train_file="PurdueShapes5MultiObject-24-train.gz",
                                 test_file="PurdueShapes5MultiObject-8-test.gz", losses=["mse"], aspp=[True], seeds=[0],
                                 max_iters=60, checkpoint_every=5, checkpoint_seconds=0, progress=False, cpu=True)
    run = "mse__aspp-on__seed-0"
    calm = run_grid_ray(cfg, tmp_path / "calm", cpus_per_run=1, num_cpus=1)
    assert "miou" in calm[run]
    ckpt = tmp_path / "killed" / "runs" / run / "saved_model.ckpt"
    killed = []

    def kill_the_worker():
        deadline = time.time() + 300
        while not ckpt.exists() and time.time() < deadline:
            time.sleep(0.05)
        pids = subprocess.run(["pgrep", "-f", "ray::grid_task"], capture_output=True, text=True).stdout.split()
        for pid in pids:
            os.kill(int(pid), signal.SIGKILL)
            killed.append(int(pid))

    killer = threading.Thread(target=kill_the_worker)
    killer.start()
    results = run_grid_ray(cfg, tmp_path / "killed", cpus_per_run=1, num_cpus=1)
    killer.join()
    assert killed, "no worker process was found to kill"
    out = capsys.readouterr()
    assert "retrying once" in out.out + out.err
    assert "miou" in results[run]
    card = json.loads((tmp_path / "killed" / "runs" / run / "saved_model.json").read_text())
    assert len(card["provenance"]["commands"]) == 2  # the retried task resumed the run (a resume adds its command)
    sha = [hashlib.sha256((tmp_path / g / "runs" / run / "saved_model").read_bytes()).hexdigest()
           for g in ("calm", "killed")]
    assert sha[0] == sha[1]
    assert not list((tmp_path / "killed").rglob("*.part"))
