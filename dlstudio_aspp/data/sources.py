"""Where PurdueShapes5MultiObject files come from: the real data, or a synthetic stand-in.

- :func:`fetch_shapes` puts the four real files in a folder. It takes them from the
  PyPI sdist of DLStudio 1.0.9 (``Examples/data/``, 11 MB, hash-pinned) first, then from
  the ~400 MB Purdue tarball named in DLStudio's documentation, checks every file's
  sha256 and records which source served each file in ``fetched.json``.
- :func:`make_shapes` writes a SYNTHETIC dataset in exactly the real file format, for
  tests and machines with no network at all.
"""
from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import pickle
import subprocess
import sys
import tarfile
import urllib.request
from pathlib import Path
from typing import Callable, Dict, Optional

import numpy as np

from ..atomic import write_bytes, write_json, write_text
from ..atomic import sha256_of
from .shapes import read_bounded, shape_label_map
from ..errors import MissingFileError, UserError

PURDUE_URL = "https://engineering.purdue.edu/kak/distDLS/datasets_for_DLStudio.tar.gz"
SDIST_SPEC = "dlstudio==1.0.9"
SHA256: Dict[str, str] = {
    "PurdueShapes5MultiObject-10000-train.gz": "d981205c49feffa2af0614b0195bf2c79b4eca629b160d67fda25cbaff99d536",
    "PurdueShapes5MultiObject-1000-test.gz": "50e61e6ea170e44f4d5f0aa283ee0a4ac402d68c2286ed1cf7f0cac56219e350",
    "PurdueShapes5MultiObject-20-train.gz": "d45d0b60dba3fa4f13c323bc40f0dea2e8c4b04b1894222ebef769f0f7586022",
    "PurdueShapes5MultiObject-20-test.gz": "4e3b6198b1663f4ac2d50786dca4344c612ea9c8f54ff1fedc6be672c784b8a7",
}
LABEL_MAP = shape_label_map()
SYNTHETIC_MARK = "SYNTHETIC.txt"
SYNTHETIC_NOTE = "SYNTHETIC PurdueShapes5MultiObject stand-in made by dlstudio-aspp make-shapes (not the real data)"
#: Beside fetched files: which source served each one (file name -> source label).
FETCH_RECORD = "fetched.json"


def cache_dir() -> Path:
    """Where downloads are kept between runs (``$DLSTUDIO_ASPP_CACHE`` overrides)."""
    d = Path(os.environ.get("DLSTUDIO_ASPP_CACHE", Path.home() / ".cache" / "dlstudio_aspp"))
    d.mkdir(parents=True, exist_ok=True)
    return d


sha256 = sha256_of
#: The DLStudio 1.0.9 sdist on PyPI (``Examples/data/`` holds the real files); pip checks this
#: hash before it unpacks the archive or runs any of its build code.
SDIST_SHA256 = "45a80a9342945fad0335948b37644d2b6e3c189d4f34f030d4bd810c087b4a3a"
#: The most the Purdue tarball download may be (it is about 400 MB).
MAX_DOWNLOAD = 2 << 30


def _from_tar(tar: tarfile.TarFile, wanted) -> Dict[str, bytes]:
    """Members of ``tar`` whose base name is wanted (nested tarballs are opened too)."""
    found: Dict[str, bytes] = {}
    for m in tar:
        if not m.isfile():
            continue
        base = os.path.basename(m.name)
        if base in wanted and base not in found:
            found[base] = tar.extractfile(m).read()
        elif base.endswith((".tar.gz", ".tgz")):
            inner = tarfile.open(fileobj=io.BytesIO(tar.extractfile(m).read()), mode="r:gz")
            found.update({k: v for k, v in _from_tar(inner, wanted).items() if k not in found})
    return found


def _purdue_source(wanted, timeout: float) -> Dict[str, bytes]:
    with urllib.request.urlopen(PURDUE_URL, timeout=timeout) as r:
        blob = read_bounded(r, MAX_DOWNLOAD, "Purdue tarball")
    return _from_tar(tarfile.open(fileobj=io.BytesIO(blob), mode="r:gz"), wanted)


def sdist_path(log: Callable[[str], None] = print) -> Path:
    """The DLStudio 1.0.9 sdist, fetched with pip once (hash-pinned) and cached; a cached copy
    that fails its sha256 (truncated, replaced) is deleted and fetched again."""
    d = cache_dir() / "sdist"
    for hit in sorted(d.glob("[Dd][Ll][Ss]tudio-1.0.9.tar.gz")) if d.is_dir() else []:
        if sha256_of(hit) == SDIST_SHA256:
            return hit
        log(f"the cached {hit.name} fails its sha256 check; fetching it again")
        hit.unlink()
    d.mkdir(parents=True, exist_ok=True)
    req = d / "requirements.txt"
    req.write_text(f"{SDIST_SPEC} --hash=sha256:{SDIST_SHA256}\n")
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--require-hashes",
           "-r", str(req), "-d", str(d)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    hits = [h for h in sorted(d.glob("[Dd][Ll][Ss]tudio-1.0.9.tar.gz")) if sha256_of(h) == SDIST_SHA256]
    if proc.returncode != 0 or not hits:
        raise MissingFileError(f"`{' '.join(cmd)}` failed: {proc.stderr.strip().splitlines()[-1:] or proc.returncode}")
    return hits[0]


def _sdist_source(wanted) -> Dict[str, bytes]:
    with tarfile.open(sdist_path(), "r:gz") as tar:
        return _from_tar(tar, wanted)


def fetch_shapes(dest: str | os.PathLike, timeout: float = 10.0, sources: Optional[Dict[str, Callable]] = None,
                 log: Callable[[str], None] = print) -> Dict[str, str]:
    """Put the four real PurdueShapes5MultiObject files in ``dest``, checked by sha256.

    Returns a dict file name -> where it came from (``'present'``, ``'pypi-sdist'``, ``'purdue'``);
    the source of every file it wrote is kept in ``dest/fetched.json`` (:func:`fetched_from`).
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    result = {n: "present" for n in SHA256 if (dest / n).is_file() and sha256(dest / n) == SHA256[n]}
    if len(result) == len(SHA256):
        log(f"all {len(SHA256)} files already in {dest} and correct")
        return result
    sources = sources or {"pypi-sdist": _sdist_source, "purdue": lambda w: _purdue_source(w, timeout)}
    errors = []
    for label, source in sources.items():
        missing = [n for n in SHA256 if n not in result]
        if not missing:
            break
        try:
            files = source(set(missing))
        except Exception as exc:  # network, pip or tar failures: try the next source
            errors.append(f"{label}: {type(exc).__name__}: {exc}")
            log(f"source {label} unavailable ({type(exc).__name__}); trying the next one")
            continue
        for name in missing:
            data = files.get(name)
            if data is None:
                continue
            if hashlib.sha256(data).hexdigest() != SHA256[name]:
                errors.append(f"{label}: {name} has the wrong sha256")
                continue
            write_bytes(dest / name, data)
            result[name] = label
            write_json(dest / FETCH_RECORD, dict(fetched_from(dest), **{name: label}))
            log(f"{name}: from {label}, sha256 ok")
    missing = [n for n in SHA256 if n not in result]
    if missing:
        raise MissingFileError(f"could not fetch {missing}: {'; '.join(errors)}. Copy the files into {dest} by hand, "
                                "or use `dlstudio-aspp make-shapes` for a synthetic stand-in.")
    _unmark(dest, list(SHA256))
    return result


def fetched_from(folder) -> Dict[str, str]:
    """File name -> the source that served it, for the files :func:`fetch_shapes` wrote in ``folder``."""
    record = Path(folder) / FETCH_RECORD
    return json.loads(record.read_text()) if record.is_file() else {}


# ----------------------------------------------------------------------------- synthetic

def _shape_mask(kind: int, size: int, rng: np.random.Generator):
    """A binary (size, size) mask of one shape and its [x1, y1, x2, y2] box."""
    from PIL import Image, ImageDraw

    r = int(rng.integers(size // 10, size // 4))
    cx, cy = (int(v) for v in rng.integers(r, size - r, size=2))
    img = Image.new("L", (size, size), 0)
    d = ImageDraw.Draw(img)
    if kind == 0:
        d.rectangle([cx - r, cy - r // 2, cx + r, cy + r // 2], fill=1)
    elif kind == 1:
        d.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=1)
    elif kind == 2:
        d.ellipse([cx - r, cy - r, cx + r, cy + r], fill=1)
    elif kind == 3:
        d.ellipse([cx - r, cy - r // 2, cx + r, cy + r // 2], fill=1)
    else:
        ang = np.linspace(0, 2 * np.pi, 11)[:-1] - np.pi / 2
        rad = np.where(np.arange(10) % 2 == 0, r, r * 0.45)
        d.polygon([(cx + a * np.cos(t), cy + a * np.sin(t)) for a, t in zip(rad, ang)], fill=1)
    m = np.array(img, dtype=bool)
    ys, xs = np.nonzero(m)
    return m, [int(xs.min()), int(ys.min()), int(xs.max()), int(ys.max())]


def make_entry(rng: np.random.Generator, size: int = 64):
    """One entry ``[R, G, B, mask (5,size,size) uint8, {k: [[x1,y1,x2,y2], ...]}]``."""
    rgb = rng.integers(0, 60, size=(3, size, size)).astype(np.uint8)
    mask = np.zeros((5, size, size), np.uint8)
    boxes = {k: [] for k in range(5)}
    for _ in range(int(rng.integers(1, 5))):
        k = int(rng.integers(0, 5))
        m, box = _shape_mask(k, size, rng)
        colour = rng.integers(100, 256, size=3).astype(np.uint8)
        rgb[:, m] = colour[:, None]
        mask[k][m] = list(LABEL_MAP.values())[k]
        boxes[k].append(box)
    return [rgb[0].ravel().tolist(), rgb[1].ravel().tolist(), rgb[2].ravel().tolist(), mask, boxes]


def make_shapes(dest: str | os.PathLike, train: int = 200, test: int = 40, seed: int = 0, size: int = 64) -> Dict[str, Path]:
    """Write SYNTHETIC ``PurdueShapes5MultiObject-{N}-train.gz`` / ``-{M}-test.gz`` files.

    The format is exactly that of the real files, so stock DLStudio reads them. A
    ``SYNTHETIC.txt`` beside them says what they are.
    """
    if train < 1 or test < 1:
        raise UserError(f"--train and --test must be >= 1, got {train} and {test}")
    dest = Path(dest)
    names = [f"PurdueShapes5MultiObject-{n}-{split}.gz" for split, n in (("train", train), ("test", test))]
    real = [n for n in names if (dest / n).is_file() and n in SHA256 and sha256(dest / n) == SHA256[n]]
    if real:
        raise UserError(f"{dest} holds the real {', '.join(real)}; make-shapes would overwrite it with synthetic data. "
                        "Choose another DEST or other --train/--test counts")
    dest.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", train), ("test", test)):
        dataset = {i: make_entry(rng, size) for i in range(n)}
        path = dest / f"PurdueShapes5MultiObject-{n}-{split}.gz"
        buf = io.BytesIO()
        with gzip.GzipFile(fileobj=buf, mode="wb", mtime=0) as f:
            f.write(pickle.dumps((dataset, dict(LABEL_MAP)), protocol=2))
        write_bytes(path, buf.getvalue())
        out[split] = path
    marked = sorted(set(synthetic_files(dest)) | {p.name for p in out.values()})
    write_text(dest / SYNTHETIC_MARK, f"{SYNTHETIC_NOTE}; seed={seed}, train={train}, test={test}\n"
               + "".join(f"{name}\n" for name in marked))
    return out


def synthetic_files(folder) -> list:
    """The files ``SYNTHETIC.txt`` names (its first line is the note; older marks name none: all are synthetic)."""
    mark = Path(folder) / SYNTHETIC_MARK
    if not mark.is_file():
        return []
    return [line.strip() for line in mark.read_text().splitlines()[1:] if line.strip()]


def is_synthetic(folder: str | os.PathLike, files=None) -> bool:
    """True when ``folder`` holds synthetic data (any of ``files``, when given, is one of the synthetic files)."""
    mark = Path(folder) / SYNTHETIC_MARK
    if not mark.is_file():
        return False
    named = synthetic_files(folder)
    return not named or files is None or any(f in named for f in files)


def _unmark(dest: Path, real_names) -> None:
    """Real files just written over synthetic ones of the same name: they leave ``SYNTHETIC.txt``."""
    named = synthetic_files(dest)
    if not (dest / SYNTHETIC_MARK).is_file():
        return
    left = [n for n in named if n not in real_names and (dest / n).is_file()]
    if left:
        lines = (dest / SYNTHETIC_MARK).read_text().splitlines()[:1]
        write_text(dest / SYNTHETIC_MARK, "\n".join(lines + left) + "\n")
    else:
        (dest / SYNTHETIC_MARK).unlink()
