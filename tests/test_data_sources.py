import hashlib
import io
import tarfile

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


def test_real_fetch_records_the_pypi_sdist_as_its_source(real_shapes):
    assert sources.fetched_from(real_shapes) == {n: "pypi-sdist" for n in sources.SHA256}


def test_the_sdist_is_tried_before_the_purdue_tarball(tmp_path, monkeypatch):
    calls = []
    monkeypatch.setattr(sources, "_sdist_source", lambda wanted: calls.append("sdist") or {})
    monkeypatch.setattr(sources, "_purdue_source", lambda wanted, timeout: calls.append("purdue") or {})
    with pytest.raises(FileNotFoundError, match="could not fetch"):
        sources.fetch_shapes(tmp_path, log=lambda s: None)
    assert calls == ["sdist", "purdue"]


def _tar_gz(members) -> bytes:
    """A .tar.gz in memory of ``{name: bytes}``."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


class _Response(io.BytesIO):
    def __init__(self, data):
        super().__init__(data)
        self.headers = {"Content-Length": str(len(data))}


def test_the_purdue_tarball_path_opens_nested_tarballs(tmp_path, monkeypatch):
    """The Purdue download holds the data inside a tarball inside the tarball; made here, no network."""
    files = {n: f"the bytes of {n}".encode() for n in sources.SHA256}
    monkeypatch.setattr(sources, "SHA256", {n: hashlib.sha256(b).hexdigest() for n, b in files.items()})
    inner = _tar_gz({f"data/{n}": b for n, b in files.items()})
    outer = _tar_gz({"DLStudio/README": b"readme", "DLStudio/datasets/shapes.tar.gz": inner})
    urls = []
    monkeypatch.setattr(sources.urllib.request, "urlopen", lambda url, timeout: urls.append(url) or _Response(outer))
    monkeypatch.setattr(sources, "_sdist_source", lambda wanted: (_ for _ in ()).throw(OSError("pip: no index")))
    logs = []
    got = sources.fetch_shapes(tmp_path, log=logs.append)
    assert got == {n: "purdue" for n in files} and urls == [sources.PURDUE_URL]
    assert {n: (tmp_path / n).read_bytes() for n in files} == files
    assert sources.fetched_from(tmp_path) == got and any("pypi-sdist unavailable" in line for line in logs)


def test_a_download_over_its_limit_is_refused(monkeypatch):
    with pytest.raises(ValueError, match="Purdue tarball is larger than the 0 MB allowed"):
        sources.read_bounded(io.BytesIO(b"x" * 10), 5, "Purdue tarball", progress=False)
    big = _Response(b"")
    big.headers = {"Content-Length": str(3 << 20)}
    with pytest.raises(ValueError, match="is 3 MB, more than the 1 MB allowed"):
        sources.read_bounded(big, 1 << 20, "Purdue tarball", progress=False)


def test_fetch_shapes_command_says_its_source(tmp_path, real_shapes, monkeypatch, capsys):
    from dlstudio_aspp import cli

    monkeypatch.setattr(sources, "_sdist_source", lambda wanted: {n: open(real_shapes + n, "rb").read() for n in wanted})
    assert cli.main(["fetch-shapes", str(tmp_path / "d")]) == 0
    assert f"ready in {tmp_path / 'd'} (source: pypi-sdist)" in capsys.readouterr().out
    assert cli.main(["fetch-shapes", str(tmp_path / "d")]) == 0
    assert "(source: present)" in capsys.readouterr().out


def test_make_shapes_is_deterministic_and_labelled(tmp_path):
    a = sources.make_shapes(tmp_path / "a", train=5, test=2, seed=3)
    b = sources.make_shapes(tmp_path / "b", train=5, test=2, seed=3)
    assert a["train"].read_bytes() == b["train"].read_bytes()
    assert sources.is_synthetic(tmp_path / "a")
    with pytest.raises(ValueError, match=">= 1"):
        sources.make_shapes(tmp_path / "c", train=0)


def test_a_cached_sdist_that_fails_its_hash_is_fetched_again(tmp_path, monkeypatch):
    """Bug: the cached sdist was never hash-checked, so a truncated one stayed forever."""
    good = sources.sdist_path().read_bytes()  # the real one (fetched once, cached)
    monkeypatch.setenv("DLSTUDIO_ASPP_CACHE", str(tmp_path))
    (tmp_path / "sdist").mkdir()
    (tmp_path / "sdist" / "DLStudio-1.0.9.tar.gz").write_bytes(b"truncated")
    commands = []

    def fake_run(cmd, **kw):
        commands.append(cmd)
        (tmp_path / "sdist" / "DLStudio-1.0.9.tar.gz").write_bytes(good)
        return __import__("subprocess").CompletedProcess(cmd, 0, "", "")

    monkeypatch.setattr(sources.subprocess, "run", fake_run)
    logs = []
    path = sources.sdist_path(log=logs.append)
    assert sources.sha256(path) == sources.SDIST_SHA256 and "fails its sha256 check" in logs[0]
    assert "--require-hashes" in commands[0]  # pip checks the pinned hash before it runs any build code
    req = (tmp_path / "sdist" / "requirements.txt").read_text()
    assert f"--hash=sha256:{sources.SDIST_SHA256}" in req


def test_fetch_shapes_removes_the_synthetic_mark_of_the_files_it_replaces(tmp_path, real_shapes):
    """Bug: SYNTHETIC.txt survived fetch-shapes, so reports called the real data synthetic."""
    sources.make_shapes(tmp_path, train=20, test=5, seed=0)  # 20-train collides with a real file's name
    assert sources.is_synthetic(tmp_path, ["PurdueShapes5MultiObject-20-train.gz"])
    files = {n: open(real_shapes + n, "rb").read() for n in sources.SHA256}
    sources.fetch_shapes(tmp_path, sources={"local": lambda wanted: {n: files[n] for n in wanted}}, log=lambda s: None)
    assert not sources.is_synthetic(tmp_path, ["PurdueShapes5MultiObject-20-train.gz"])
    assert sources.is_synthetic(tmp_path, ["PurdueShapes5MultiObject-5-test.gz"])  # still synthetic


def test_make_shapes_never_overwrites_real_files(tmp_path, real_shapes):
    import shutil

    shutil.copy(real_shapes + "PurdueShapes5MultiObject-20-train.gz", tmp_path)
    with pytest.raises(ValueError, match="holds the real PurdueShapes5MultiObject-20-train.gz"):
        sources.make_shapes(tmp_path, train=20, test=20)
    assert sources.sha256(tmp_path / "PurdueShapes5MultiObject-20-train.gz") == \
        sources.SHA256["PurdueShapes5MultiObject-20-train.gz"]


def test_an_oversized_gzip_is_refused(tmp_path, monkeypatch):
    from dlstudio_aspp.data import shapes

    sources.make_shapes(tmp_path, train=3, test=1)
    monkeypatch.setattr(shapes, "MAX_UNCOMPRESSED", 1000)
    with pytest.raises(ValueError, match="uncompressed .* is larger than the 0 MB allowed"):
        shapes.read_pickle_gz(tmp_path / "PurdueShapes5MultiObject-3-train.gz")


def test_a_download_past_its_limit_is_refused():
    import io

    with pytest.raises(ValueError, match="larger than the 1 MB allowed"):
        sources.read_bounded(io.BytesIO(b"x" * (3 << 20)), 1 << 20, "tarball", progress=False)


def test_a_cache_folder_you_cannot_write_falls_back_to_your_own_cache(tmp_path, monkeypatch, capsys):
    """Bug: an .npz cache folder owned by another user raised an uncaught PermissionError."""
    from dlstudio_aspp.data import shapes

    monkeypatch.setenv("DLSTUDIO_ASPP_CACHE", str(tmp_path / "home"))
    sources.make_shapes(tmp_path / "data", train=3, test=1)
    src = tmp_path / "data" / "PurdueShapes5MultiObject-3-train.gz"
    local, home = shapes._cache_paths(src, [64, 64])
    real = shapes.write_with

    def refuse_local(path, writer):
        if path.parent == local.parent:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, writer)

    monkeypatch.setattr(shapes, "write_with", refuse_local)
    shapes.load_arrays(src, [64, 64])
    assert home.is_file() and "keeping it in" in capsys.readouterr().out
    src.touch()  # a newer file: a new cache, and the stale one is removed
    shapes.load_arrays(src, [64, 64])
    assert not home.exists() and len(list(home.parent.glob("*.npz"))) == 1


@pytest.mark.parametrize("how", ["auto", "--fetch"])
def test_run_fetches_the_real_files_it_needs(how, tmp_path, real_shapes, monkeypatch, capsys):
    """`run` with the default data folder fetches the real files there; `run --data NEW --fetch` fetches into NEW;
    without --fetch a missing --data is one line that names --fetch."""
    from dlstudio_aspp import cli

    served = []
    monkeypatch.setattr(sources, "_sdist_source",
                        lambda wanted: served.extend(sorted(wanted)) or {n: open(real_shapes + n, "rb").read() for n in wanted})
    data = ["--data", str(tmp_path / "new"), "--fetch"] if how == "--fetch" else []
    argv = ["run", *data, "--train-file", "PurdueShapes5MultiObject-20-train.gz", "--test-file",
            "PurdueShapes5MultiObject-20-test.gz", "--max-iters", "1", "--depth", "4", "--no-progress", "--cpu",
            "--out", str(tmp_path / "run")]
    if how == "--fetch":
        assert cli.main(argv[:3] + argv[4:]) == 2 and "add --fetch" in capsys.readouterr().err
    assert cli.main(argv) == 0
    folder = tmp_path / "new" if how == "--fetch" else tmp_path / "data" / "PurdueShapes5MultiObject"
    assert sorted(served) == sorted(sources.SHA256) and sources.fetched_from(folder) == {n: "pypi-sdist" for n in served}
    import json

    assert json.loads((tmp_path / "run" / "saved_model.json").read_text())["iterations"] == 1
