"""SIGKILL at every named crash point (DLSTUDIO_ASPP_CRASH=point:k, k = 1..3) and at random moments, then the same
command again (with --resume when a checkpoint exists): the run ends on the uninterrupted run's weights, byte for
byte, with no `.part` file left. Each kill is a fork of this process (torch already imported), so it is cheap."""
import hashlib
import io
import os
import random
import re
import signal
import sys
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
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 1
        try:
            torch.set_num_threads(1)
            if crash:
                os.environ[ENV] = crash
            else:
                os.environ.pop(ENV, None)
            with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
                code = cli.main(argv)
        finally:
            os._exit(code)
    return os.waitpid(pid, 0)[1]


def _finish(syn, out) -> str:
    """The same command again until it succeeds (with --resume when there is a checkpoint); its output."""
    resume = ["--resume"] if (out / "saved_model.ckpt").exists() else []
    buf = io.StringIO()
    with redirect_stdout(buf), redirect_stderr(buf):
        rc = cli.main(_args(syn, out) + resume)
    assert rc == 0, buf.getvalue()[-2000:]
    return buf.getvalue()


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
            argv = _args(syn, out) + (["--resume"] if (out / "saved_model.ckpt").exists() else [])
            pid = os.fork()
            if pid == 0:
                code = 1
                try:
                    torch.set_num_threads(1)
                    with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
                        code = cli.main(argv)
                finally:
                    os._exit(code)
            time.sleep(rng.uniform(0.05, 2.5))
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            kills += 1
        _finish(syn, out)
        assert _sha(out / "saved_model") == expected, f"case {case}"
        assert not list(out.rglob("*.part"))
    assert kills == 20
