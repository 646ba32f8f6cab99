import gzip
import pickle
import shutil

import numpy as np
import pytest
import torch

from conftest import make_dls
from dlstudio_aspp.data.shapes import PurdueShapes5MultiObjectDataset as Fast
from dlstudio_aspp.dlstudio_glue import load_dlstudio

DLStudio = load_dlstudio()


def stock_and_fast(root, tmp_path, file, split="test"):
    dls = make_dls(root, tmp_path)
    seg = DLStudio.SemanticSegmentation(dl_studio=dls, max_num_objects=5)
    stock = DLStudio.SemanticSegmentation.PurdueShapes5MultiObjectDataset(dl_studio=dls, segmenter=seg, train_or_test=split, dataset_file=file)
    fast = Fast(dl_studio=dls, segmenter=seg, train_or_test=split, dataset_file=file)
    return stock, fast


def assert_same_item(a, b):
    assert a.keys() == b.keys() == {"image", "mask_tensor", "bbox_tensor"}
    for k in a:
        assert a[k].dtype == b[k].dtype and a[k].shape == b[k].shape, k
        assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("file", ["PurdueShapes5MultiObject-20-train.gz", "PurdueShapes5MultiObject-1000-test.gz"])
def test_items_equal_stock_on_real_data(real_shapes, tmp_path, file):
    stock, fast = stock_and_fast(real_shapes, tmp_path, file)
    assert len(stock) == len(fast)
    idx = range(len(fast)) if len(fast) <= 20 else [0, 1, 7, 123, 500, 998, 999]
    for i in idx:
        assert_same_item(stock[i], fast[i])
    assert fast.label_map == stock.label_map
    assert fast[0]["bbox_tensor"].shape == (64, 5, 4)


def test_cache_is_safe_and_second_load_matches(real_shapes, tmp_path):
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(real_shapes + "PurdueShapes5MultiObject-20-test.gz", root)
    dls = make_dls(str(root) + "/", tmp_path)
    first = Fast(dls, None, "test", "PurdueShapes5MultiObject-20-test.gz")
    caches = list((root / ".dlstudio_aspp_cache").glob("*.npz"))
    assert len(caches) == 1
    with np.load(caches[0], allow_pickle=False) as z:  # loads without pickle: a safe format
        assert z["images"].dtype == np.uint8 and z["masks"].dtype == np.uint8
    second = Fast(dls, None, "test", "PurdueShapes5MultiObject-20-test.gz")
    for i in range(len(first)):
        assert_same_item(first[i], second[i])
    assert not list(tmp_path.glob("torch_saved_*"))


def test_synthetic_data_reads_with_stock_class(synthetic_shapes, tmp_path):
    stock, fast = stock_and_fast(synthetic_shapes, tmp_path, "PurdueShapes5MultiObject-24-train.gz", "train")
    assert len(stock) == 24
    for i in range(24):
        assert_same_item(stock[i], fast[i])
    m = fast[3]["mask_tensor"]
    for k in range(5):
        assert set(torch.unique(m[k]).tolist()) <= {0, 50 * (k + 1)}


def write(path, obj, gz=True):
    data = pickle.dumps(obj)
    path.write_bytes(gzip.compress(data) if gz else data)


def test_missing_dataroot(tmp_path):
    with pytest.raises(FileNotFoundError, match="fetch-shapes"):
        Fast(make_dls(str(tmp_path / "nope") + "/", tmp_path), None, "train", "x.gz")


def test_dataroot_without_trailing_slash(synthetic_shapes, tmp_path):
    with pytest.raises(ValueError, match="must end with '/'"):
        Fast(make_dls(synthetic_shapes.rstrip("/"), tmp_path), None, "train", "PurdueShapes5MultiObject-24-train.gz")


def test_missing_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="missing.gz.*fetch-shapes"):
        Fast(make_dls(str(tmp_path) + "/", tmp_path), None, "train", "missing.gz")


@pytest.mark.parametrize("kind", ["truncated", "not-gzip", "wrong-shape", "not-pickle", "bad-split"])
def test_bad_files_get_one_line_errors(tmp_path, synthetic_shapes, kind):
    f = tmp_path / "bad.gz"
    if kind == "truncated":
        f.write_bytes((open(synthetic_shapes + "PurdueShapes5MultiObject-8-test.gz", "rb").read())[:500])
    elif kind == "not-gzip":
        write(f, ({}, {}), gz=False)
    elif kind == "wrong-shape":
        write(f, {"a": 1})
    elif kind == "not-pickle":
        f.write_bytes(gzip.compress(b"hello world"))
    else:
        write(f, ({0: [1, 2, 3]}, {}))
    dls = make_dls(str(tmp_path) + "/", tmp_path)
    with pytest.raises(ValueError) as err:
        Fast(dls, None, "train" if kind != "bad-split" else "valid", "bad.gz")
    msg = str(err.value)
    assert "\n" not in msg
    assert ("bad.gz" in msg) or kind == "bad-split"


def _one_file(real_shapes, tmp_path, name="PurdueShapes5MultiObject-20-test.gz"):
    root = tmp_path / "data"
    root.mkdir()
    shutil.copy(real_shapes + name, root)
    return root, name


def test_cache_key_includes_image_size(real_shapes, tmp_path):
    """Bug: after one 64x64 load, a 32x32 request silently got 64x64 items from the cache."""
    root, name = _one_file(real_shapes, tmp_path)
    assert Fast(train_or_test="test", dataset_file=name, root=root)[0]["image"].shape == (3, 64, 64)
    with pytest.raises(ValueError, match=r"image_size=\[64, 64\]"):
        Fast(train_or_test="test", dataset_file=name, root=root, image_size=[32, 32])


def test_corrupt_cache_is_rebuilt(real_shapes, tmp_path, capsys):
    root, name = _one_file(real_shapes, tmp_path)
    first = Fast(train_or_test="test", dataset_file=name, root=root)
    (cache,) = (root / ".dlstudio_aspp_cache").glob("*.npz")
    cache.write_bytes(b"PK\x03\x04 this is not a zip")
    again = Fast(train_or_test="test", dataset_file=name, root=root)
    assert "damaged" in capsys.readouterr().out
    assert_same_item(first[3], again[3])
    with np.load(cache, allow_pickle=False) as z:  # rewritten, readable
        assert z["images"].shape[0] == 20


class _Exploit:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_runs_nothing(tmp_path):
    marker = tmp_path / "pwned"
    write(tmp_path / "evil.gz", ({0: [_Exploit(str(marker))]}, {}))
    with pytest.raises(ValueError, match=r"was refused: it names io\.open"):
        Fast(train_or_test="train", dataset_file="evil.gz", root=tmp_path, use_cache=False)
    assert not marker.exists()


@pytest.mark.slow
@pytest.mark.parametrize("name", ["PurdueShapes5MultiObject-10000-train.gz", "PurdueShapes5MultiObject-1000-test.gz",
                                  "PurdueShapes5MultiObject-20-train.gz", "PurdueShapes5MultiObject-20-test.gz"])
@pytest.mark.slow
def test_real_files_pass_the_safe_unpickler(real_shapes, name):
    from pathlib import Path

    from dlstudio_aspp.data.shapes import read_pickle_gz

    dataset, label_map = read_pickle_gz(Path(real_shapes) / name)
    assert len(dataset) == int(name.split("-")[1]) and sorted(label_map.values()) == [50, 100, 150, 200, 250]
