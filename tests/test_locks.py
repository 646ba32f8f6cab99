"""One writer per folder; no silent restart over a run."""
import json
import os
import socket
import subprocess
import sys
import time

import pytest

from dlstudio_aspp import cli
from dlstudio_aspp.locks import LOCK_NAME, FolderLock


@pytest.mark.slow
def test_a_second_run_on_the_same_folder_is_refused_and_the_first_finishes(syn, tmp_path, capsys):
    out = tmp_path / "o"
    first = subprocess.Popen([sys.executable, "-m", "dlstudio_aspp.cli", "run", *syn, "--out", str(out),
                              "--max-iters", "40", "--cpu"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 120
    while not (out / LOCK_NAME).exists():
        assert first.poll() is None and time.time() < deadline, "the first run ended before it took its lock"
        time.sleep(0.05)
    assert cli.main(["run", *syn, "--out", str(out), "--max-iters", "2", "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert f"is in use by `dlstudio-aspp run` (pid {first.pid} on {socket.gethostname()}" in err
    output, _ = first.communicate(timeout=300)
    assert first.returncode == 0, output
    card = json.loads((out / "saved_model.json").read_text())
    assert card["iterations"] == 40 and not (out / LOCK_NAME).exists()


def test_a_dead_holders_lock_is_taken_over(tmp_path, capsys):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": socket.gethostname(), "command": "old"}))
    with FolderLock(tmp_path, "new"):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert "taking over the lock of `old`" in capsys.readouterr().out and not (tmp_path / LOCK_NAME).exists()


def test_another_hosts_lock_is_never_taken_over(tmp_path):
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "command": "run"}))
    with pytest.raises(ValueError, match=r"in use by `run` \(pid 1 on elsewhere.*delete .*\.dlstudio_aspp\.lock"):
        FolderLock(tmp_path, "new").acquire()


def test_a_fresh_lock_says_nothing(tmp_path, capsys):
    with FolderLock(tmp_path / "new", "x"):
        pass
    with FolderLock(tmp_path, "y"):
        pass
    assert capsys.readouterr().out == ""


def test_a_failed_command_leaves_no_empty_folder(tmp_path):
    lock = FolderLock(tmp_path / "new", "x")
    with lock:
        assert (tmp_path / "new").is_dir()
    assert not (tmp_path / "new").exists()


def test_run_without_resume_refuses_an_interrupted_folder_and_overwrite_moves_it_aside(syn, tmp_path, capsys):
    """Bug: `run` without --resume overwrote the interrupted run's checkpoint at its first save."""
    out = tmp_path / "o"
    assert cli.main(["run", *syn, "--out", str(out), "--max-iters", "2"]) == 0
    (out / "saved_model").unlink()  # as if stopped: only the checkpoint and its history
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    capsys.readouterr()
    assert cli.main(["run", *syn, "--out", str(out), "--max-iters", "2"]) == 2
    assert "holds an interrupted run (a checkpoint); add --resume" in capsys.readouterr().err
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    assert cli.main(["run", *syn, "--out", str(out), "--max-iters", "2", "--overwrite", "--loss", "mse"]) == 0
    assert "--overwrite: moved" in capsys.readouterr().out
    aside = [p for p in out.iterdir() if p.name.startswith("previous-")]
    assert len(aside) == 1 and (aside[0] / "saved_model.ckpt").read_bytes() == before["saved_model.ckpt"]
    assert json.loads((out / "saved_model.json").read_text())["spec"]["loss"] == "mse"
    assert cli.main(["run", *syn, "--out", str(out), "--resume", "--overwrite"]) == 2


def test_an_empty_lock_file_left_by_a_killed_process_does_not_block(tmp_path, capsys):
    """SIGKILL between creating the lock file and writing its contents (the crash point `lock-created`)."""
    code = "from dlstudio_aspp.locks import FolderLock; FolderLock(%r, 'killed').acquire()" % str(tmp_path)
    killed = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, DLSTUDIO_ASPP_CRASH="lock-created"))
    assert killed.returncode == -9 and (tmp_path / LOCK_NAME).read_bytes() == b""
    with FolderLock(tmp_path, "next"):
        assert json.loads((tmp_path / LOCK_NAME).read_text())["command"] == "next"
    assert "taking over an empty or unreadable lock file" in capsys.readouterr().out


def _try_lock(folder, barrier, results):
    barrier.wait()
    try:
        with FolderLock(folder, "racer"):
            results.put("won")
            time.sleep(1.0)  # hold it while the others try
    except ValueError as exc:
        results.put(str(exc))


def test_of_processes_taking_over_a_dead_holders_lock_at_once_exactly_one_wins(tmp_path):
    import multiprocessing as mp

    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": 2 ** 22 + 1, "host": socket.gethostname(), "command": "old"}))
    ctx = mp.get_context("fork")
    barrier, results = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_try_lock, args=(tmp_path, barrier, results)) for _ in range(4)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(30)
    outcomes = [results.get(timeout=5) for _ in procs]
    assert outcomes.count("won") == 1, outcomes
    assert all("is in use by" in o for o in outcomes if o != "won")  # the winner may not have written its name yet
    assert not (tmp_path / LOCK_NAME).exists()


def test_a_live_holder_is_named_even_after_its_file_was_emptied(tmp_path):
    with FolderLock(tmp_path, "first"):
        (tmp_path / LOCK_NAME).write_bytes(b"")  # the description is gone; the kernel's lock is not
        with pytest.raises(ValueError, match="in use by an unknown process"):
            FolderLock(tmp_path, "second").acquire()


def test_a_write_cut_off_by_sigkill_keeps_the_old_file_and_its_part_is_removed_by_the_next_lock(tmp_path, capsys):
    from dlstudio_aspp.atomic import write_text

    target = tmp_path / "saved_model.json"
    write_text(target, "old contents")
    for point in ("atomic-written", "atomic-fsynced"):
        code = f"from dlstudio_aspp.atomic import write_text; write_text({str(target)!r}, 'new' * 100000)"
        killed = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, DLSTUDIO_ASPP_CRASH=point))
        assert killed.returncode == -9 and target.read_text() == "old contents"
    parts = sorted(tmp_path.glob(".saved_model.json.*.part"))
    assert len(parts) == 2
    busy = tmp_path / "runs" / "r" / ".history.json.abc.part"  # a write still going on: fresh mtime
    busy.parent.mkdir(parents=True)
    busy.write_text("x")
    os.utime(busy, (time.time() + 60, time.time() + 60))
    old = time.time() - 5
    for p in parts:
        os.utime(p, (old, old))
    with FolderLock(tmp_path, "next"):
        pass
    assert "removed 2 unfinished temporary files (.part)" in capsys.readouterr().out
    assert not any(p.exists() for p in parts) and busy.exists() and target.read_text() == "old contents"


def test_a_write_killed_after_its_rename_is_complete(tmp_path):
    target = tmp_path / "f.txt"
    code = f"from dlstudio_aspp.atomic import write_text; write_text({str(target)!r}, 'new')"
    killed = subprocess.run([sys.executable, "-c", code], env=dict(os.environ, DLSTUDIO_ASPP_CRASH="atomic-renamed"))
    assert killed.returncode == -9 and target.read_text() == "new" and not list(tmp_path.glob("*.part"))
