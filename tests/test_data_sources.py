import hashlib

import pytest

from dlstudio_aspp.data import sources


def test_fetch_falls_back_and_verifies(tmp_path, real_shapes):
    files = {n: open(real_shapes + n, "rb").read() for n in sources.SHA256}
    calls = []

    def purdue(wanted):
        calls.append("purdue")
        raise OSError("no route to host")

    def sdist(wanted):
        calls.append("sdist")
        return {n: files[n] for n in wanted}

    logs = []
    got = sources.fetch_shapes(tmp_path, sources={"purdue": purdue, "pypi-sdist": sdist}, log=logs.append)
    assert calls == ["purdue", "sdist"]
    assert set(got.values()) == {"pypi-sdist"}
    assert any("purdue unavailable" in line for line in logs)
    for n, digest in sources.SHA256.items():
        assert hashlib.sha256((tmp_path / n).read_bytes()).hexdigest() == digest
    again = sources.fetch_shapes(tmp_path, sources={"purdue": purdue}, log=logs.append)
    assert set(again.values()) == {"present"} and calls == ["purdue", "sdist"]


def test_fetch_rejects_wrong_checksum(tmp_path):
    def bad(wanted):
        return {n: b"not the data" for n in wanted}

    with pytest.raises(FileNotFoundError, match="wrong sha256"):
        sources.fetch_shapes(tmp_path, sources={"evil": bad}, log=lambda s: None)
    assert not list(tmp_path.glob("*.gz"))


def test_real_fetch_uses_the_pypi_sdist(real_shapes):
    for n, digest in sources.SHA256.items():
        assert sources.sha256(__import__("pathlib").Path(real_shapes) / n) == digest


def test_make_shapes_is_deterministic_and_labelled(tmp_path):
    a = sources.make_shapes(tmp_path / "a", train=5, test=2, seed=3)
    b = sources.make_shapes(tmp_path / "b", train=5, test=2, seed=3)
    assert a["train"].read_bytes() == b["train"].read_bytes()
    assert sources.is_synthetic(tmp_path / "a")
    with pytest.raises(ValueError, match=">= 1"):
        sources.make_shapes(tmp_path / "c", train=0)
