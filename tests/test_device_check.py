"""benchmarks/gpu/device_check.sh, the prepared check of the GPU path, run on this CPU at a tiny budget: every
step runs and says what a card would (resume by sha256, weights read without a GPU, the bench table, the main job
with --compile, the homework-dense grid one run and packed), so the script a device session runs is known to work."""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_the_device_check_runs_every_step_on_a_cpu(tmp_path):
    from dlstudio_aspp import cli

    data = tmp_path / "syn"
    assert cli.main(["make-shapes", str(data), "--train", "48", "--test", "8"]) == 0
    out = tmp_path / "out"
    env = dict(os.environ, S="0.04", DEPTH="4", OUT=str(out), DATA=str(data), PY=sys.executable, BENCH="--sides 64",
               EXTRA="--train-file PurdueShapes5MultiObject-48-train.gz --test-file PurdueShapes5MultiObject-8-test.gz",
               GRID="--loss mse,dice --seed 0 --aspp on", GPUS_PER_RUN="0")
    done = subprocess.run(["bash", "benchmarks/gpu/device_check.sh"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]
    times = dict(re.findall(r"^(\S+) rc=(\d+)", (out / "times.txt").read_text(), re.M))
    assert times.pop("resume_stop") == "130"  # SIGTERM: checkpoint written, exit 130
    assert times == {k: "0" for k in ("resume_full", "resume_twin", "resume_resumed", "load_without_gpu", "bench_gpu",
                                      "main_compile", "grid_one_run", "grid_packed_ray")}
    resume = (out / "resume.txt").read_text()
    shas = re.findall(r"^(full|twin|stopped) ([0-9a-f]{64})$", resume, re.M)
    assert len(shas) == 3 and len({sha for _, sha in shas}) == 1  # resumed ends on the uninterrupted weights
    stopped = int(re.search(r"stopped at iteration (\d+)", resume).group(1))
    assert 4 <= stopped < 24 and f"at iteration {stopped}" in resume.split("resumed from")[1]
    assert (out / "load_without_gpu.log").read_text().count("read without a GPU") == 2
    table = [line for line in (out / "bench_gpu.log").read_text().splitlines() if line.startswith("| 64x64")]
    assert len(table) == 4 and "failed" not in "".join(table)
    main = (out / "main_compile.log").read_text()
    assert "test mIoU" in main and "fell back" not in main and "failed" not in main
    summary = (out / "summary.txt").read_text()
    assert "1 of 1 runs finished" in summary and "2 of 2 runs finished" in summary
