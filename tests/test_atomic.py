import json

import pytest

from dlstudio_aspp.atomic import write_json, write_text, write_with


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_part_file(tmp_path):
    path = tmp_path / "sub" / "summary.json"
    write_json(path, {"miou": 0.5})

    def crash(p):
        p.write(b'{"miou": 0.')  # half-written, then the writer dies
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_with(path, crash)
    assert json.loads(path.read_text()) == {"miou": 0.5}
    assert [p.name for p in path.parent.iterdir()] == ["summary.json"]


def test_write_replaces_and_creates_folders(tmp_path):
    path = tmp_path / "a" / "b" / "note.txt"
    write_text(path, "one")
    write_text(path, "two")
    assert path.read_text() == "two" and sorted(p.name for p in path.parent.iterdir()) == ["note.txt"]


def test_a_planted_symlink_is_not_followed(tmp_path):
    """Bug: the temporary name was predictable (.NAME.PID.part), so a link planted there redirected the write."""
    import os

    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    path = tmp_path / "summary.json"
    for name in (f".{path.name}.{os.getpid()}.part.json", f".{path.name}.part"):
        (tmp_path / name).symlink_to(victim)
    write_json(path, {"ok": 1})
    assert victim.read_text() == "keep me" and json.loads(path.read_text()) == {"ok": 1}
    assert not path.is_symlink()


def test_writes_are_synced_to_disk(tmp_path, monkeypatch):
    import os

    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: synced.append(fd) or real(fd))
    write_text(tmp_path / "a.txt", "x")
    assert len(synced) == 2  # the file before the rename, the folder after it
