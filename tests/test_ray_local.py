"""Without --address the grid starts its own local Ray, whatever RAY_ADDRESS says."""
import pytest

import ray

from dlstudio_aspp.experiments import GridConfig  # noqa: E402
from dlstudio_aspp.ray_executor import run_grid_ray  # noqa: E402


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
