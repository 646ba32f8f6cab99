"""Open a run's data from its :class:`~dlstudio_aspp.spec.RunSpec`: the one place that
turns ``dataset``, ``data``, the file names and the subsets into datasets."""
from __future__ import annotations

from pathlib import Path
from typing import Tuple

from .wrappers import innermost_dataset
from ..errors import MissingFileError, UserError
from ..registry import DATASETS, resolve
from ..spec import DEFAULT_SHAPES_DATA, RunSpec


def dataroot(spec: RunSpec, fetch: bool = False) -> str:
    """The data folder (ending in '/'), checked by the dataset kind's ``root`` (:data:`~dlstudio_aspp.registry.DATASETS`)."""
    return resolve(DATASETS[spec.dataset].root)(spec, fetch)


def built_root(spec: RunSpec, fetch: bool = False) -> str:
    """A folder written by ``build-coco``: it must exist (nothing to fetch)."""
    if not spec.data:
        raise UserError(f"--dataset {spec.dataset} needs --data: the folder written by `dlstudio-aspp build-coco`")
    if not Path(spec.data).is_dir():
        raise MissingFileError(f"--data {spec.data} is not a folder; give the folder written by `dlstudio-aspp build-coco`")
    return spec.data if spec.data.endswith("/") else spec.data + "/"


def shapes_root(spec: RunSpec, fetch: bool = False) -> str:
    """PurdueShapes' folder; its real files are fetched into the default folder (or into ``--data`` with
    ``fetch``) when they are missing."""
    return _shapes_root(spec.data, fetch, spec.train_file, spec.test_file)


def _shapes_root(data, fetch: bool, train_file: str, test_file: str) -> str:
    from .sources import SHA256, fetch_shapes

    folder = data or DEFAULT_SHAPES_DATA
    folder = folder if folder.endswith("/") else folder + "/"
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise UserError(f"--data {data} is a file; give the folder that holds {train_file}")
    if all((path / f).is_file() for f in (train_file, test_file)):
        return folder
    if data is not None and not path.is_dir() and not fetch:
        raise MissingFileError(f"--data {data} does not exist; give an existing folder, or add --fetch to download "
                               "the real PurdueShapes5MultiObject files there")
    if train_file in SHA256 and test_file in SHA256:
        fetch_shapes(folder)
        return folder
    missing = [f for f in (train_file, test_file) if not (path / f).is_file()]
    raise MissingFileError(f"{', '.join(missing)} missing from {folder}; check --train-file/--test-file or run "
                           f"`dlstudio-aspp fetch-shapes {folder}`")


def open_split(spec: RunSpec, split: str, root: str, image_size=None):
    """The 'train' or 'test' split of the spec's dataset under ``root`` (no subset applied)."""
    return resolve(DATASETS[spec.dataset].open)(spec, split, root, image_size)


def open_coco(spec: RunSpec, split: str, root: str, image_size=None):
    from .coco import COCOSegmentationDataset

    return COCOSegmentationDataset(train_or_test=split, root=root, image_size=image_size)


def open_shapes(spec: RunSpec, split: str, root: str, image_size=None):
    from .shapes import PurdueShapes5MultiObjectDataset

    file = spec.train_file if split == "train" else spec.test_file
    return PurdueShapes5MultiObjectDataset(train_or_test=split, dataset_file=file, root=root, image_size=image_size)


def open_datasets(spec: RunSpec, fetch: bool = False) -> Tuple[object, object]:
    """(train, test) of the spec: the training set whole (training takes ``train_subset``),
    the test set cut to ``test_subset``."""
    import torch

    root = dataroot(spec, fetch)
    train, test = open_split(spec, "train", root), open_split(spec, "test", root)
    if spec.test_subset:
        test = torch.utils.data.Subset(test, range(min(spec.test_subset, len(test))))
    return train, test


def dataset_shape(dataset) -> Tuple[int, list]:
    """(number of classes, [H, W]) of a dataset (a Subset is looked through), from its
    ``label_map`` and ``image_size`` when it has them, else from its first item."""
    inner = innermost_dataset(dataset)
    label_map, size = getattr(inner, "label_map", None), getattr(inner, "image_size", None)
    if label_map and size:
        return len(label_map), list(size)
    item = dataset[0]
    return int(item["mask_tensor"].shape[0]), list(item["image"].shape[-2:])


#: ImageNet's per-channel mean and std, in 0..255 units.
IMAGENET_MEAN = [0.485 * 255, 0.456 * 255, 0.406 * 255]
IMAGENET_STD = [0.229 * 255, 0.224 * 255, 0.225 * 255]


def input_stats(kind: str, dataset, max_images: int = 512):
    """(mean, std) per channel in 0..255 units for ``kind`` ('none' -> (None, None), 'imagenet', or
    'dataset': measured on up to ``max_images`` evenly spaced images of ``dataset``)."""
    import torch

    if kind == "none":
        return None, None
    if kind == "imagenet":
        return list(IMAGENET_MEAN), list(IMAGENET_STD)
    n = len(dataset)
    idx = torch.linspace(0, n - 1, min(n, max_images)).round().long().unique().tolist()
    total = torch.zeros(3, dtype=torch.float64)
    squares = torch.zeros(3, dtype=torch.float64)
    pixels = 0
    for i in idx:
        im = dataset[i]["image"].double()
        total += im.sum((1, 2))
        squares += (im * im).sum((1, 2))
        pixels += im.shape[1] * im.shape[2]
    mean = total / pixels
    std = (squares / pixels - mean * mean).clamp(min=1e-6).sqrt()
    return [round(float(v), 4) for v in mean], [round(float(v), 4) for v in std]


def file_identity(path) -> dict:
    """Name, size and sha256 of a data file: what a resume compares."""
    from ..atomic import sha256_of

    path = Path(path)
    return {"file": path.name, "size": path.stat().st_size, "sha256": sha256_of(path)}


def data_identity(dataset) -> dict:
    """What a training set is, for a checkpoint: its length and its file (PurdueShapes' .gz,
    a COCO set's index.json) by name, size and sha256; a Subset is looked through."""
    from .coco import INDEX

    inner = innermost_dataset(dataset)
    out = {"kind": type(inner).__name__, "images": len(dataset)}
    source = getattr(inner, "path", None)
    if source is None and getattr(inner, "root", None) is not None and (Path(inner.root) / INDEX).is_file():
        source = Path(inner.root) / INDEX
    if source is not None and Path(source).is_file():
        out.update(file_identity(source))
    return out


def is_synthetic(spec: RunSpec) -> bool:
    from .sources import is_synthetic as marked

    return DATASETS[spec.dataset].files and marked(spec.data or DEFAULT_SHAPES_DATA, [spec.train_file, spec.test_file])
