"""SIGKILL at every named crash point (DLSTUDIO_ASPP_CRASH=point:k, k = 1..3) and at random moments, then the same
command again (with --resume when a checkpoint exists): the run ends on the uninterrupted run's weights, byte for
byte, with no `.part` file left. Each kill is a fork of this process (torch already imported), so it is cheap."""
import hashlib
import io
import os
import random
import re
import signal
import time
from contextlib import redirect_stderr, redirect_stdout

import pytest
import torch

from dlstudio_aspp import cli
from dlstudio_aspp.crash import ENV

RUN_POINTS = ["lock-created", "atomic-written", "atomic-fsynced", "atomic-renamed", "atomic-dir-synced",
              "checkpoint-previous-kept", "checkpoint-written", "run-weights-saved"]
ONCE = {"lock-created", "run-weights-saved"}  # passed once per command; the others at every write or checkpoint
CASES = [(p, k) for p in RUN_POINTS for k in (1, 2, 3) if k == 1 or p not in ONCE]
EVERY = 2


def _args(syn, out):
    return ["run", *syn, "--out", str(out), "--seed", "5", "--max-iters", "8", "--cpu", "--checkpoint-every",
            str(EVERY), "--checkpoint-seconds", "0", "--test-subset", "2"]


def _child(argv, crash=None) -> int:
    """Run ``dlstudio-aspp argv`` in a forked child (its output to a buffer); return its wait status."""
    return os.waitpid(_start(argv, crash), 0)[1]


def _start(argv, crash=None, log=None) -> int:
    """Start ``dlstudio-aspp argv`` in a forked child (one torch thread, as every run of these tests: results
    depend on the thread count), with ``DLSTUDIO_ASPP_CRASH=crash`` when given, its output into the file ``log``
    when given; its pid."""
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            torch.set_num_threads(1)
            if crash:
                os.environ[ENV] = crash
            else:
                os.environ.pop(ENV, None)
            buf = io.StringIO()
            with redirect_stdout(buf), redirect_stderr(buf):
                code = cli.main(argv)
            if log is not None:
                log.write_text(buf.getvalue())
        finally:
            os._exit(code)
    return pid


def _finish(syn, out) -> str:
    """The same command again until it succeeds (with --resume when there is a checkpoint); its output."""
    resume = ["--resume"] if (out / "saved_model.ckpt").exists() else []
    log = out.parent / "finish.log"
    status = os.waitpid(_start(_args(syn, out) + resume, log=log), 0)[1]
    text = log.read_text() if log.exists() else ""
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, text[-2000:]
    return text


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def baseline(tmp_path_factory):
    from dlstudio_aspp.data.sources import make_shapes

    data = tmp_path_factory.mktemp("killdata")
    make_shapes(data, train=8, test=2, seed=0)
    syn = ["--data", str(data), "--train-file", "PurdueShapes5MultiObject-8-train.gz", "--test-file",
           "PurdueShapes5MultiObject-2-test.gz", "--depth", "4", "--no-progress"]
    out = tmp_path_factory.mktemp("uninterrupted")
    assert os.WEXITSTATUS(_child(_args(syn, out))) == 0
    return syn, _sha(out / "saved_model")


@pytest.mark.parametrize("point,k", CASES)
@pytest.mark.slow
def test_a_kill_at_a_crash_point_resumes_to_the_same_weights(baseline, point, k, tmp_path):
    syn, expected = baseline
    out = tmp_path / "run"
    status = _child(_args(syn, out), crash=f"{point}:{k}")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    before = None
    if (out / "saved_model.ckpt").exists():
        from dlstudio_aspp.checkpoint import newest_good

        before = newest_good([out / "saved_model.ckpt", out / "saved_model.ckpt.prev"])[0]["iteration"]
    text = _finish(syn, out)
    if before is not None:  # at most one checkpoint interval of work lost: it goes on from the newest checkpoint
        assert re.search(rf"resumed from .* at iteration {before}\b", text), text[-1500:]
    assert _sha(out / "saved_model") == expected
    assert not list(out.rglob("*.part"))


@pytest.mark.slow
def test_twenty_random_kills_some_in_chains_of_three(baseline, tmp_path):
    syn, expected = baseline
    rng = random.Random(0)
    kills = 0
    for case in range(12):
        out = tmp_path / f"run{case}"
        chain = 3 if case % 3 == 0 else 1  # 4 chains of three and 8 single kills: 20
        for _ in range(chain):
            pid = _start(_args(syn, out) + (["--resume"] if (out / "saved_model.ckpt").exists() else []))
            time.sleep(rng.uniform(0.05, 2.5))
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            kills += 1
        _finish(syn, out)
        assert _sha(out / "saved_model") == expected, f"case {case}"
        assert not list(out.rglob("*.part"))
    assert kills == 20


def _files(folder):
    """Every file under ``folder`` and its bytes' sha256 (the lock excluded)."""
    return {p.relative_to(folder).as_posix(): _sha(p) for p in sorted(folder.rglob("*"))
            if p.is_file() and p.name != ".dlstudio_aspp.lock"}


@pytest.mark.parametrize("point,k", [("coco-mask-written", 1), ("coco-mask-written", 3), ("coco-images-written", 1),
                                     ("atomic-written", 2)])
def test_a_kill_in_build_coco_rebuilds_the_same_set(coco_tiny, point, k, tmp_path):
    argv = ["build-coco", "--coco-root", str(coco_tiny), "--classes", "person", "--size", "32", "--no-progress"]
    assert os.WEXITSTATUS(_child(argv + ["--out", str(tmp_path / "calm")])) == 0
    status = _child(argv + ["--out", str(tmp_path / "killed")], crash=f"{point}:{k}")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert not (tmp_path / "killed" / "index.json").exists()  # no set that looks finished
    assert os.WEXITSTATUS(_child(argv + ["--out", str(tmp_path / "killed")])) == 0
    calm, killed = _files(tmp_path / "calm"), _files(tmp_path / "killed")
    assert killed == calm and not list((tmp_path / "killed").rglob("*.part"))


@pytest.mark.parametrize("k", [1, 2])
@pytest.mark.slow
def test_a_kill_between_grid_runs_finishes_the_same_grid(baseline, k, tmp_path):
    syn, _ = baseline
    argv = ["experiments", "--preset", "smoke", *syn, "--loss", "mse", "--aspp", "both", "--seed", "0", "--max-iters",
            "2", "--cpu", "--no-report", "--test-subset", "2"]
    assert os.WEXITSTATUS(_child(argv + ["--out", str(tmp_path / "calm")])) == 0
    status = _child(argv + ["--out", str(tmp_path / "killed")], crash=f"grid-between-runs:{k}")
    assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL
    assert os.WEXITSTATUS(_child(argv + ["--out", str(tmp_path / "killed")])) == 0
    for run in ("mse__aspp-on__seed-0", "mse__aspp-off__seed-0"):
        assert _sha(tmp_path / "calm" / "runs" / run / "saved_model") == \
            _sha(tmp_path / "killed" / "runs" / run / "saved_model")
    assert not list((tmp_path / "killed").rglob("*.part"))


@pytest.mark.slow
def test_a_kill_while_the_report_is_written_leaves_the_old_documents_and_writes_the_same_again(baseline, tmp_path):
    syn, _ = baseline
    run = tmp_path / "run"
    assert os.WEXITSTATUS(_child(_args(syn, run))) == 0
    report = ["report", str(run), "--format", "md,html,pdf"]
    assert os.WEXITSTATUS(_child(report)) == 0
    before = {n: (run / n).read_bytes() for n in ("report.md", "report.html")}
    status = _child(report, crash="report-writing:1")
    assert os.WIFSIGNALED(status) and not list(run.rglob("*.part"))  # the kill came between two whole files
    assert os.WEXITSTATUS(_child(report)) == 0
    assert {n: (run / n).read_bytes() for n in before} == before and (run / "report.pdf").stat().st_size > 0
