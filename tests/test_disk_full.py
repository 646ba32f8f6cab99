"""A full disk: one line naming the file, the space it needs and the last good checkpoint; no `.part` left, the
file being replaced untouched; and after space is freed, `--resume` ends where a run that never stopped ends."""
import errno
import hashlib
import io
import os
import subprocess

import pytest
import torch

from dlstudio_aspp import cli
from dlstudio_aspp.atomic import write_with
from dlstudio_aspp.errors import DiskFullError

OBJ = {"model": {"w": torch.arange(20000, dtype=torch.float32)}, "iteration": 3}
_buffer = io.BytesIO()
torch.save(OBJ, _buffer)
SIZE = len(_buffer.getvalue())


class FullAfter:
    """A file that takes ``limit`` bytes and then fails with ENOSPC (``lasting``: every write after, too)."""

    def __init__(self, f, limit: int, state: dict) -> None:
        self.f, self.limit, self.state = f, limit, state

    def write(self, b) -> int:
        room = self.limit - self.f.tell()
        if self.state["fail"] and len(b) > room:
            self.f.write(bytes(b)[:max(room, 0)])
            self.state["fail"] = self.state["lasting"]
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return self.f.write(b)

    def flush(self) -> None:
        self.f.flush()


@pytest.mark.parametrize("lasting", [False, True], ids=["one-off", "lasting"])
@pytest.mark.parametrize("at", [0, 1, 4096, SIZE // 2, SIZE - 1, "fsync"])
def test_enospc_anywhere_in_a_checkpoint_write_keeps_the_old_file(at, lasting, tmp_path, monkeypatch):
    path = tmp_path / "saved_model.ckpt"
    path.write_bytes(b"the previous checkpoint")
    state = {"fail": True, "lasting": lasting}

    def write():
        if at == "fsync":
            return write_with(path, lambda f: torch.save(OBJ, f))
        return write_with(path, lambda f: torch.save(OBJ, FullAfter(f, at, state)))

    if at == "fsync":
        real = os.fsync

        def fsync(fd):
            if state["fail"]:
                state["fail"] = state["lasting"]
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
            return real(fd)

        monkeypatch.setattr(os, "fsync", fsync)
    with pytest.raises(DiskFullError, match=rf"no space left on the disk for {path} .*it needs more than .* is free"):
        write()
    assert path.read_bytes() == b"the previous checkpoint" and not list(tmp_path.glob(".*.part"))
    if lasting:  # the same write again fails the same way, and still leaves nothing behind
        with pytest.raises(DiskFullError):
            write()
        assert path.read_bytes() == b"the previous checkpoint" and not list(tmp_path.glob(".*.part"))
    else:  # an fsync error is never retried inside the write: the next write is a new one, and it lands
        write()
        assert torch.equal(torch.load(path, weights_only=True)["model"]["w"], OBJ["model"]["w"])


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def tmpfs(tmp_path):
    """A 45 MB tmpfs (CI runs as root); unmounted after the test."""
    mnt = tmp_path / "tmpfs"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=45M", "tmpfs", str(mnt)], capture_output=True, text=True)
    if done.returncode != 0:
        if os.environ.get("CI", "").lower() in ("true", "1", "yes"):
            pytest.fail(f"cannot mount a tmpfs under CI: {done.stderr.strip()}")
        pytest.skip(f"cannot mount a tmpfs here (not root?): {done.stderr.strip()}")
    yield mnt
    subprocess.run(["umount", str(mnt)], check=True)


@pytest.mark.slow
def test_a_run_that_cannot_fit_its_second_checkpoint_stops_in_one_line_and_resumes_exactly(syn, tmp_path, tmpfs,
                                                                                          capsys):
    args = ["run", *syn, "--seed", "5", "--max-iters", "6", "--cpu", "--checkpoint-every", "2",
            "--checkpoint-seconds", "0"]
    assert cli.main([*args, "--out", str(tmp_path / "full")]) == 0
    out = tmpfs / "run"
    capsys.readouterr()
    assert cli.main([*args, "--out", str(out)]) == 2  # a depth-4 checkpoint is about 37 MB: the second does not fit
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "Traceback" not in err
    assert err.startswith(f"error: no space left on the disk for {out}/saved_model.ckpt (No space left on device)")
    assert f"the last good checkpoint is {out}/saved_model.ckpt (iteration 2)" in err
    assert not list(out.rglob("*.part"))
    kept = _sha(out / "saved_model.ckpt")
    assert torch.load(out / "saved_model.ckpt", weights_only=True)["iteration"] == 2
    subprocess.run(["mount", "-o", "remount,size=200M", str(tmpfs)], check=True)
    assert _sha(out / "saved_model.ckpt") == kept
    assert cli.main([*args, "--out", str(out), "--resume"]) == 0
    a = torch.load(tmp_path / "full" / "saved_model", weights_only=True)
    b = torch.load(out / "saved_model", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
