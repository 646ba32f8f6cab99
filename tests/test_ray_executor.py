"""The grid on a real local Ray (num_cpus=2), with the smoke preset."""
import json

import pytest

import ray

from dlstudio_aspp.experiments import GridConfig  # noqa: E402
from dlstudio_aspp.grid import GridFolder  # noqa: E402
from dlstudio_aspp.ray_executor import default_gpus_per_run, grid_task, run_grid_ray  # noqa: E402
from dlstudio_aspp.report import make_report  # noqa: E402

run_name = GridFolder.cell_name

TRAIN, TEST = "PurdueShapes5MultiObject-24-train.gz", "PurdueShapes5MultiObject-8-test.gz"


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def smoke(data, **kw):
    return GridConfig.from_preset("smoke", **dict(dict(data=data, train_file=TRAIN, test_file=TEST, losses=["mse", "dice"],
                                                       aspp=[True], seeds=[0], max_iters=2, progress=False, cpu=True), **kw))


@pytest.mark.slow
def test_grid_finishes_and_the_report_lists_every_run(local_ray, synthetic_shapes, tmp_path):
    cfg = smoke(synthetic_shapes, aspp=[True, False])
    results = run_grid_ray(cfg, tmp_path, cpus_per_run=1)
    names = {run_name(loss, aspp, 0) for loss in ("mse", "dice") for aspp in (True, False)}
    assert set(results) == names and all("miou" in r for r in results.values())
    report = make_report(tmp_path).read_text()
    assert all(name in report for name in names)
    for name in names:  # the same run folder as the serial executor writes
        assert (tmp_path / "runs" / name / "saved_model.json").is_file()
        assert json.loads((tmp_path / "runs" / name / "summary.json").read_text())["iterations"] == 2


@pytest.mark.slow
def test_a_failing_run_is_retried_then_recorded(local_ray, synthetic_shapes, tmp_path):
    counter = tmp_path / "attempts"
    counter.mkdir()
    bad = run_name("dice", True, 0)

    def flaky(spec_json, folder, threads, command):
        from pathlib import Path

        name = Path(folder).name
        (counter / f"{name}.{len(list(counter.glob(name + '.*')))}").touch()
        if name == bad:
            raise RuntimeError("injected failure")
        return grid_task(spec_json, folder, threads, command)

    results = run_grid_ray(smoke(synthetic_shapes), tmp_path / "g", task=flaky)
    assert "injected failure" in results[bad]["error"] and results[bad]["attempts"] == 2
    assert len(list(counter.glob(bad + ".*"))) == 2  # tried, retried once
    good = run_name("mse", True, 0)
    assert "miou" in results[good] and len(list(counter.glob(good + ".*"))) == 1
    grid = json.loads((tmp_path / "g" / "grid.json").read_text())
    assert "injected failure" in grid["failed"][bad]
    report = make_report(tmp_path / "g").read_text()
    assert "## Failed runs" in report and bad in report


@pytest.mark.slow
def test_rerun_after_cancellation_skips_finished_runs(local_ray, synthetic_shapes, tmp_path, capsys):
    cfg = smoke(synthetic_shapes, seeds=[0, 1])

    def cancel(name, summary):
        raise KeyboardInterrupt  # Ctrl-C as soon as the first run ends

    with pytest.raises(KeyboardInterrupt):
        run_grid_ray(cfg, tmp_path, on_finish=cancel)
    finished = {p.parent.name for p in (tmp_path / "runs").glob("*/summary.json")}
    assert len(finished) >= 1
    results = run_grid_ray(cfg, tmp_path)
    assert f"{len(finished)} finished runs skipped" in capsys.readouterr().out
    assert set(results).isdisjoint(finished) and len(results) == 4 - len(finished)
    assert len(list((tmp_path / "runs").glob("*/summary.json"))) == 4


def test_a_node_that_cannot_read_the_data_says_so(tmp_path):
    spec = smoke(str(tmp_path / "elsewhere") + "/").cell_specs()[0]
    with pytest.raises(ValueError, match=r"node .* cannot read --data .*elsewhere/: every node must see the data at the same path"):
        grid_task(spec.to_json(), str(tmp_path / "out"), 1)


def test_experiments_executor_ray_from_the_command_line(local_ray, syn, tmp_path, monkeypatch, capsys):
    """`experiments --executor ray` runs its cells as Ray tasks, with 0 GPUs per run on a machine without one
    (an explicit --gpus-per-run and --address reach the executor); those two flags need --executor ray."""
    from dlstudio_aspp import cli, ray_executor

    base = ["experiments", str(tmp_path / "g"), "--preset", "smoke", *syn, "--loss", "mse", "--aspp", "on",
            "--seed", "0", "--max-iters", "1", "--cpu", "--no-report"]
    for extra in (["--address", "auto"], ["--gpus-per-run", "1"]):
        assert cli.main(base + extra) == 2
        assert "--address and --gpus-per-run need --executor ray" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()
    calls = []
    real = ray_executor.run_grid_ray
    monkeypatch.setattr(ray_executor, "run_grid_ray", lambda cfg, out, **kw: calls.append(kw) or real(cfg, out, **kw))
    assert cli.main(base + ["--executor", "ray", "--cpus-per-run", "1"]) == 0
    assert calls[-1] == dict(address=None, cpus_per_run=1.0, gpus_per_run=None)  # decided from the cluster (below)
    assert json.loads((tmp_path / "g" / "runs" / run_name("mse", True, 0) / "summary.json").read_text())["iterations"] == 1
    from dlstudio_aspp.provenance import command_line

    card = json.loads((tmp_path / "g" / "runs" / run_name("mse", True, 0) / "saved_model.json").read_text())
    assert card["provenance"]["command"] == command_line()  # the grid's command, not the Ray worker's
    assert cli.main(base + ["--executor", "ray", "--gpus-per-run", "-1"]) == 2
    assert "--gpus-per-run >= 0" in capsys.readouterr().err
    monkeypatch.setattr(ray_executor, "run_grid_ray", lambda cfg, out, **kw: calls.append(kw) or {})
    assert cli.main(base + ["--executor", "ray", "--gpus-per-run", "0.5", "--address", "auto"]) == 0
    assert calls[-1] == dict(address="auto", cpus_per_run=1.0, gpus_per_run=0.5)


def test_gpus_per_run_defaults_to_the_clusters_gpus_not_the_drivers(local_ray, synthetic_shapes, tmp_path, monkeypatch):
    """Bug: `--address` from a driver without a GPU asked 0 GPUs per run, so a GPU cluster's tasks trained on
    its CPUs. The default now comes from the cluster's resources."""
    asked = {}

    class Submitted(Exception):
        pass

    class Remote:
        def options(self, **kw):
            asked.update(kw)
            raise Submitted

    monkeypatch.setattr(ray, "cluster_resources", lambda: {"CPU": 64.0, "GPU": 8.0})  # the cluster, not this machine
    monkeypatch.setattr(ray, "remote", lambda fn: Remote())
    with pytest.raises(Submitted):
        run_grid_ray(smoke(synthetic_shapes, cpu=False), tmp_path)
    assert asked["num_gpus"] == 1.0
    assert default_gpus_per_run({"CPU": 2.0}, cpu=False) == 0.0
    assert default_gpus_per_run({"GPU": 1.0}, cpu=True) == 0.0  # --cpu keeps every run off the GPUs


def test_asking_for_gpus_the_cluster_lacks_is_refused_not_left_waiting(local_ray, synthetic_shapes, tmp_path):
    """Bug: --gpus-per-run 0.125 on a cluster without a GPU left every task waiting for one, for ever."""
    with pytest.raises(ValueError, match=r"--gpus-per-run 0.125 asks for more GPUs than the Ray cluster has \(0\); "
                                         r"lower it, or --gpus-per-run 0 to train on the CPUs"):
        run_grid_ray(smoke(synthetic_shapes), tmp_path, gpus_per_run=0.125)
    assert not list(tmp_path.iterdir())  # refused before anything was written, grid.json included
