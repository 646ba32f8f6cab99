"""PurdueShapes5MultiObject, loaded once into compact uint8 arrays.

Stock ``DLStudio.SemanticSegmentation.PurdueShapes5MultiObjectDataset`` unpickles the
``.gz`` file on every run except the 10000-image one, which it caches as a 450 MB
``torch_saved_*.pt`` in the working directory; on torch >= 2.6 reading that cache back
fails (``torch.load`` defaults to ``weights_only=True``). This class takes the same
constructor arguments and returns the same items, but caches the decoded arrays as a
compressed ``.npz`` read with ``allow_pickle=False``, which is safe and fast.

File format (shared with :func:`dlstudio_aspp.data.sources.make_shapes`): a gzip'd pickle of
``(dataset, label_map)`` where ``dataset[i] = [R, G, B, mask, bboxes]``:
R, G, B are H*W lists of ints, ``mask`` is a (5, H, W) uint8 array whose channel k
holds 0 or ``50*(k+1)``, and ``bboxes`` is a dict ``k -> [[x1, y1, x2, y2], ...]``
keyed by shape index 0..4.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import os
import pickle
import zipfile
import zlib
from pathlib import Path
from typing import Dict, Tuple

import numpy as np
import torch

from ..atomic import write_with
from ..errors import MissingFileError, UserError
from ..masks import mask_values_for

#: PurdueShapes5MultiObject's classes, in channel order (DLStudio's ``classes``).
SHAPE_CLASSES = ("rectangle", "triangle", "disk", "oval", "star")


def shape_label_map() -> Dict[str, int]:
    """PurdueShapes' ``label_map``: class name -> mask value (rectangle 50 ... star 250)."""
    return dict(zip(SHAPE_CLASSES, mask_values_for(len(SHAPE_CLASSES))))

CACHE_VERSION = 1
FETCH_HINT = "get the data with `dlstudio-aspp fetch-shapes ./data/PurdueShapes5MultiObject/`"


def check_dataroot(dataroot: str, dataset_file: str) -> Path:
    """Validate DLStudio's ``dataroot + dataset_file`` and return the file's path."""
    if not dataroot:
        raise UserError(f"DLStudio was built without a dataroot; pass dataroot='./data/PurdueShapes5MultiObject/' ({FETCH_HINT})")
    if not os.path.isdir(dataroot):
        raise MissingFileError(f"dataroot {dataroot!r} does not exist: {FETCH_HINT}")
    if not dataroot.endswith(("/", os.sep)):
        raise UserError(
            f"dataroot {dataroot!r} must end with '/': DLStudio builds paths as dataroot + dataset_file; "
            f"use dataroot={dataroot + '/'!r}"
        )
    path = Path(dataroot + dataset_file)
    if not path.is_file():
        raise MissingFileError(f"dataset file {str(path)!r} is missing: {FETCH_HINT}")
    return path


#: The only globals a PurdueShapes pickle may name: numpy's array reconstruction (and the
#: byte-string codec protocol 2 uses for its buffers).
#: Builtin containers, numbers and strings need no global at all.
SAFE_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"), ("numpy", "dtype"),
    ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
    ("_codecs", "encode"),  # how protocol-2 pickles store an array's raw bytes
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickles data only: any global outside :data:`SAFE_GLOBALS` is refused before it is called.

    A plain ``pickle.loads`` runs whatever callable the file names (``os.system``...),
    so a crafted dataset file could run code; this one cannot.
    """

    def find_class(self, module: str, name: str):
        if (module, name) in SAFE_GLOBALS:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"it names {module}.{name}, which a PurdueShapes data file never needs "
                                     "(only numpy arrays and builtin containers are allowed)")


#: The most a dataset ``.gz`` may hold uncompressed (the real 10000-image file holds 1.3 GB).
MAX_UNCOMPRESSED = 4 << 30


def read_bounded(response, limit: int, label: str, progress: bool = True) -> bytes:
    """A download read in blocks, with a progress bar, refused once it passes ``limit`` bytes."""
    size = int(response.headers.get("Content-Length") or 0) if hasattr(response, "headers") else 0
    if size > limit:
        raise UserError(f"{label} is {size >> 20} MB, more than the {limit >> 20} MB allowed")
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=size or None, unit="B", unit_scale=True, desc=label, mininterval=1.0)
    chunks, total = [], 0
    try:
        while True:
            block = response.read(1 << 20)
            if not block:
                return b"".join(chunks)
            total += len(block)
            if total > limit:
                raise UserError(f"{label} is larger than the {limit >> 20} MB allowed; refusing the rest")
            chunks.append(block)
            if bar is not None:
                bar.update(len(block))
    finally:
        if bar is not None:
            bar.close()


def _read_gz(path: Path, limit: int) -> bytes:
    with gzip.open(path, "rb") as f:
        return read_bounded(f, limit, f"{path} uncompressed (more than any PurdueShapes5MultiObject file; raise "
                                      "dlstudio_aspp.data.shapes.MAX_UNCOMPRESSED for a larger set of your own)",
                            progress=False)


def read_pickle_gz(path: Path) -> Tuple[dict, dict]:
    """Read and check a PurdueShapes5MultiObject ``.gz``; one-line errors on bad files."""
    try:
        raw = _read_gz(path, MAX_UNCOMPRESSED)
    except (gzip.BadGzipFile, EOFError, zlib.error, OSError) as exc:
        raise UserError(
            f"{path} is not a complete gzip file ({type(exc).__name__}: {exc}); delete it and "
            f"re-run `dlstudio-aspp fetch-shapes {path.parent}/`"
        ) from None
    try:
        obj = _SafeUnpickler(io.BytesIO(raw), encoding="latin1").load()
    except pickle.UnpicklingError as exc:
        raise UserError(f"{path} was refused: {exc}; {FETCH_HINT}") from None
    except Exception as exc:  # a corrupt pickle can raise almost anything
        raise UserError(f"{path} does not hold a pickle ({type(exc).__name__}); {FETCH_HINT}") from None
    if not (isinstance(obj, (tuple, list)) and len(obj) == 2 and isinstance(obj[0], dict) and isinstance(obj[1], dict)):
        raise UserError(f"{path} should hold a pickled (dataset dict, label_map dict), got {type(obj).__name__}; {FETCH_HINT}")
    dataset, label_map = obj
    if not dataset:
        raise UserError(f"{path} holds an empty dataset; {FETCH_HINT}")
    first = dataset[next(iter(dataset))]
    if not (isinstance(first, (list, tuple)) and len(first) == 5 and np.asarray(first[3]).ndim == 3):
        raise UserError(f"{path}: each entry should be [R, G, B, mask (C,H,W), bbox dict]; {FETCH_HINT}")
    return dataset, label_map


def decode(dataset: dict, image_size) -> Dict[str, np.ndarray]:
    """Turn the pickled entries into compact arrays.

    Returns ``images`` (N, 3, H, W) uint8, ``masks`` (N, C, H, W) uint8, ``boxes``
    (N, C, K, 4) int16 padded with -1, ``counts`` (N, C) int16 boxes per class.
    """
    h, w = image_size
    keys = sorted(dataset)
    n = len(keys)
    first_mask = np.asarray(dataset[keys[0]][3])
    c = first_mask.shape[0]
    if first_mask.shape[1:] != (h, w):
        raise UserError(f"masks are {first_mask.shape[1:]} but DLStudio's image_size is {tuple(image_size)}; set image_size={list(first_mask.shape[1:])}")
    images = np.empty((n, 3, h, w), np.uint8)
    masks = np.empty((n, c, h, w), np.uint8)
    k_max = max(1, max(len(v) for e in dataset.values() for v in e[4].values()))
    boxes = np.full((n, c, k_max, 4), -1, np.int16)
    counts = np.zeros((n, c), np.int16)
    for i, key in enumerate(keys):
        entry = dataset[key]
        for ch in range(3):
            images[i, ch] = np.asarray(entry[ch], dtype=np.uint8).reshape(h, w)
        masks[i] = np.asarray(entry[3], dtype=np.uint8)
        for cls, blist in entry[4].items():
            counts[i, cls] = len(blist)
            for j, b in enumerate(blist):
                boxes[i, cls, j] = b
    return {"images": images, "masks": masks, "boxes": boxes, "counts": counts}


def _cache_paths(src: Path, image_size) -> Tuple[Path, Path]:
    """(beside the data, in the user's cache) for ``src`` at ``image_size``: named by the file's path,
    size and mtime, so an edited file gets a new cache."""
    st = src.stat()
    size = "x".join(str(int(v)) for v in image_size)
    tag = hashlib.sha1(f"{src.resolve()}|{st.st_size}|{st.st_mtime_ns}|{size}|{CACHE_VERSION}".encode()).hexdigest()[:12]
    name = f"{src.name}.{size}.{tag}.npz"
    home = Path(os.environ.get("DLSTUDIO_ASPP_CACHE", Path.home() / ".cache" / "dlstudio_aspp")) / "npz"
    return src.parent / ".dlstudio_aspp_cache" / name, home / name


def _write_cache(paths: Tuple[Path, Path], label_map: dict, arrays: dict) -> None:
    """Write the cache beside the data, else (a folder you cannot write) in the user's cache; drop older
    caches of the same file and size there."""
    for k, cache in enumerate(paths):
        try:
            cache.parent.mkdir(parents=True, exist_ok=True)
            write_with(cache, lambda f: np.savez_compressed(f, label_names=np.array(list(label_map)),
                                                            label_values=np.array(list(label_map.values())), **arrays))
        except PermissionError:
            if k == 0:
                print(f"cannot write the cache beside the data ({cache.parent}); keeping it in {paths[1].parent}")
                continue
            raise
        prefix = cache.name.rsplit(".", 2)[0]  # <file>.<size>
        for old in cache.parent.glob(f"{prefix}.*.npz"):
            if old != cache:
                old.unlink(missing_ok=True)
        return


def load_arrays(path: Path, image_size, use_cache: bool = True) -> Tuple[Dict[str, np.ndarray], dict]:
    """Arrays and label map for ``path``, from the ``.npz`` cache when it is fresh."""
    paths = _cache_paths(path, image_size)
    cache = next((p for p in paths if p.is_file()), paths[0])
    if use_cache and cache.is_file():
        try:
            with np.load(cache, allow_pickle=False) as z:
                arrays = {k: z[k] for k in ("images", "masks", "boxes", "counts")}
                names, values = z["label_names"], z["label_values"]
            return arrays, {str(k): int(v) for k, v in zip(names, values)}
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
            print(f"the cache {cache} is damaged ({type(exc).__name__}); rebuilding it from {path.name}")
    dataset, label_map = read_pickle_gz(path)
    arrays = decode(dataset, image_size)
    if use_cache:
        _write_cache(paths, label_map, arrays)
    return arrays, dict(label_map)


class PurdueShapes5MultiObjectDataset(torch.utils.data.Dataset):
    """Drop-in for DLStudio's dataset of the same name; same arguments, same items.

    Item: ``{'image': (3, H, W) float32 in [0, 255], 'mask_tensor': (C, H, W) uint8,
    'bbox_tensor': (H, C, 4) float32}`` (stock sizes the first bbox axis by the mask's
    second dimension; slot j of class k holds that class's j-th box).

    Args:
        dl_studio: the DLStudio instance (``dataroot`` ending in '/', ``image_size``), as
            stock; or None with ``root`` and ``image_size`` given directly.
        segmenter: the SemanticSegmentation instance (kept for signature parity).
        train_or_test: ``'train'`` or ``'test'``.
        dataset_file: e.g. ``'PurdueShapes5MultiObject-10000-train.gz'``.
        use_cache: keep a compressed ``.npz`` of the decoded arrays beside the file.
        root: the folder holding ``dataset_file`` (instead of ``dl_studio.dataroot``).
        image_size: [H, W] (instead of ``dl_studio.image_size``; default [64, 64]).
    """

    def __init__(self, dl_studio=None, segmenter=None, train_or_test="train", dataset_file=None, use_cache: bool = True,
                 *, root=None, image_size=None):
        super().__init__()
        if train_or_test not in ("train", "test"):
            raise UserError(f"train_or_test must be 'train' or 'test', got {train_or_test!r}")
        if not dataset_file:
            raise UserError("dataset_file is needed, e.g. 'PurdueShapes5MultiObject-10000-train.gz'")
        if root is not None:
            root = str(root)
            root = root if root.endswith(("/", os.sep)) else root + "/"
        path = self.path = check_dataroot(root if root is not None else getattr(dl_studio, "dataroot", None), dataset_file)
        self.image_size = list(image_size or getattr(dl_studio, "image_size", None) or [64, 64])
        arrays, self.label_map = load_arrays(path, self.image_size, use_cache)
        self.images = torch.from_numpy(arrays["images"])
        self.masks = torch.from_numpy(arrays["masks"])
        self.boxes = torch.from_numpy(arrays["boxes"].astype(np.float32))
        self.counts = arrays["counts"]
        self.class_labels = {v: k for k, v in self.label_map.items()}
        self.num_shapes = len(self.label_map)
        self.train_or_test = train_or_test
        self.dataset_file = dataset_file

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, idx: int) -> dict:
        mask = self.masks[idx]
        bbox = torch.zeros(mask.shape[1], self.num_shapes, 4, dtype=torch.float)
        for cls in range(min(self.num_shapes, mask.shape[0])):
            k = int(self.counts[idx, cls])
            if k:
                bbox[:k, cls] = self.boxes[idx, cls, :k]
        return {"image": self.images[idx].float(), "mask_tensor": mask.clone(), "bbox_tensor": bbox}
