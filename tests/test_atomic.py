import json

import pytest

from dlstudio_aspp.atomic import write_json, write_text, write_with


def test_a_failed_write_keeps_the_previous_file_and_leaves_no_part_file(tmp_path):
    path = tmp_path / "sub" / "summary.json"
    write_json(path, {"miou": 0.5})

    def crash(p):
        p.write_text('{"miou": 0.')  # half-written, then the writer dies
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
