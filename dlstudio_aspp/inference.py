"""Run a trained model on your own pictures: ``dlstudio-aspp predict RUN_DIR IMAGES... --out DIR``.

Any size and the common formats (PNG, JPEG, BMP, TIFF, WebP; grey and RGBA too). Each
image is converted to RGB, resized to the run's image size, run through the model with
the card's input scaling and thresholds, and its masks are resized back to the image's
own size (nearest neighbour). Per image, :func:`write_outputs` writes
``<name>_overlay.png`` (the masks drawn on the picture in the class colours),
``<name>_<class>.png`` (0/255) per class, and one line of ``predictions.jsonl`` with each
class's pixel fraction; ``contact_sheet.png`` shows every overlay with the class colours, and
a warning says when the pictures are unlike the training images (size, shape, photographs
for a model trained on synthetic shapes). :func:`predict` is the same in Python, returning the masks.
"""
from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Iterable, Iterator, List, Sequence, Tuple, Union

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .atomic import save_image, write_text
from .card import RunCard
from .errors import MissingFileError, UserError

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif")


def find_images(paths: Sequence) -> List[Path]:
    """Image files named, or found (not recursively) in the folders named; one-line errors for the rest."""
    found: List[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            inside = sorted(f for f in p.iterdir() if f.is_file() and f.suffix.lower() in IMAGE_SUFFIXES)
            if not inside:
                raise UserError(f"{p} holds no images ({', '.join(IMAGE_SUFFIXES)}); give image files or a folder of them")
            found += inside
        elif p.is_file():
            found.append(p)
        else:
            raise MissingFileError(f"{p} does not exist; give image files or folders of images")
    return found


def read_image(path: Path) -> Image.Image:
    """An RGB PIL image; grey and palette images are expanded, RGBA is put on black."""
    try:
        with Image.open(path) as im:
            im.load()
            if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
                rgba = im.convert("RGBA")
                back = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
                return Image.alpha_composite(back, rgba).convert("RGB")
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError) as exc:
        raise UserError(f"{path} is not an image this tool can read ({type(exc).__name__}); "
                        f"give PNG or JPEG files") from None


def to_input(image: Image.Image, size: Sequence[int]) -> torch.Tensor:
    """(3, H, W) float in 0..255 at the run's ``size`` [H, W], as the datasets hand them out."""
    h, w = int(size[0]), int(size[1])
    resized = image.resize((w, h), Image.BILINEAR) if image.size != (w, h) else image
    return torch.from_numpy(np.asarray(resized, dtype=np.uint8).copy()).permute(2, 0, 1).float()


def _batches(items: Sequence, batch_size: int) -> Iterator[Sequence]:
    for start in range(0, len(items), batch_size):
        yield items[start:start + batch_size]


def predict_tensors(card: RunCard, model, images: torch.Tensor, device) -> torch.Tensor:
    """(B, 3, H, W) images in 0..255 at the card's size -> (B, C, H, W) bool masks."""
    with torch.inference_mode():
        out = model(card.prepare_input(images.to(device))).float().cpu()
    return card.binarize(out)


def predict(run: Union[str, Path, RunCard], images: Iterable, *, batch_size: int = 16, device="cpu",
            progress: bool = False) -> List[torch.Tensor]:
    """Masks of ``images`` (paths or PIL images) by the run's model: one (C, h, w) bool tensor per image,
    at the image's own size."""
    card = run if isinstance(run, RunCard) else RunCard.load(run)
    model = card.load_model(device)
    pictures = [read_image(Path(i)) if not isinstance(i, Image.Image) else i.convert("RGB") for i in images]
    return [m for _, m in _predict_pictures(card, model, pictures, batch_size, device, progress)]


def _predict_pictures(card, model, pictures, batch_size, device, progress) -> Iterator[Tuple[Image.Image, torch.Tensor]]:
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(pictures), desc="predict", unit="img", mininterval=1.0)
    for chunk in _batches(pictures, batch_size):
        masks = predict_tensors(card, model, torch.stack([to_input(p, card.image_size) for p in chunk]), device)
        for picture, mask in zip(chunk, masks):
            w, h = picture.size
            if mask.shape[-2:] != (h, w):
                mask = torch.nn.functional.interpolate(mask[None].float(), size=(h, w), mode="nearest")[0] > 0.5
            yield picture, mask
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()


def write_outputs(name: str, picture: Image.Image, mask: torch.Tensor, class_names: Sequence[str], out: Path) -> dict:
    """The overlay, one 0/255 PNG per class and the record of one image; returns the record."""
    from .evaluation import overlay

    image = torch.from_numpy(np.asarray(picture, dtype=np.uint8).copy()).permute(2, 0, 1)
    save_image(Image.fromarray(overlay(image, mask).permute(1, 2, 0).numpy()), out / f"{name}_overlay.png")
    for k, cls in enumerate(class_names):
        save_image(Image.fromarray(mask[k].numpy().astype(np.uint8) * 255), out / f"{name}_{cls}.png")
    total = float(mask.shape[-1] * mask.shape[-2])
    return {"image": name, "size": [picture.size[1], picture.size[0]],
            "fraction": {cls: round(float(mask[k].sum()) / total, 6) for k, cls in enumerate(class_names)}}


def predict_files(run, paths: Sequence, out, *, batch_size: int = 16, device="cpu", progress: bool = True) -> Path:
    """``dlstudio-aspp predict``: masks, overlays and ``predictions.jsonl`` in ``out``; returns that file."""
    card = RunCard.load(run)
    model = card.load_model(device)
    files = find_images(paths)
    pictures = [read_image(f) for f in files]  # every file is checked before anything is written
    for line in mismatch_warnings(card, pictures):
        warnings.warn(line, UserWarning, stacklevel=2)
    out = Path(out)
    names = _unique_names(files)
    # the generator runs to its end (a zip with the names would stop one step short: its bar at 0/N)
    records = [write_outputs(names[k], picture, mask, card.class_names, out) for k, (picture, mask)
               in enumerate(_predict_pictures(card, model, pictures, batch_size, device, progress))]
    for record, f in zip(records, files):
        record["file"] = str(f)
    contact_sheet([out / f"{n}_overlay.png" for n in names], names, card.class_names, out / CONTACT_SHEET)
    return write_text(out / "predictions.jsonl", "".join(json.dumps(r) + "\n" for r in records))


def mismatch_warnings(card: RunCard, pictures: Sequence[Image.Image]) -> List[str]:
    """What makes these pictures unlike the ones the run was trained on: their size and shape, and
    photographs given to a model that saw only synthetic pictures."""
    from .registry import DATASETS

    h, w = (int(v) for v in card.image_size)
    off = [p.size for p in pictures if max(p.size[1] / h, h / p.size[1], p.size[0] / w, w / p.size[0]) > 2
           or abs(np.log((p.size[0] / p.size[1]) / (w / h))) > np.log(1.25)]
    if not off:
        return []
    sizes = sorted(off, key=lambda s: s[0] * s[1])
    found = f"{sizes[0][0]}x{sizes[0][1]}" + (f" to {sizes[-1][0]}x{sizes[-1][1]}" if len(sizes) > 1 else "")
    lines = [f"{len(off)} of {len(pictures)} pictures ({found}, width x height) differ from the {w}x{h} the model was "
             f"trained on; each is resized to {w}x{h} without keeping its shape, so objects appear at another scale "
             "than in training"]
    name = card.spec.get("dataset", "")
    kind = DATASETS[name] if name in DATASETS else None
    if kind is not None and kind.synthetic:
        lines.append(f"this model was trained only on {kind.synthetic}: on photographs or other pictures its masks "
                     "mean little; for photographs train on COCO (dlstudio-aspp run --dataset coco)")
    return lines


#: The file of ``predict``'s contact sheet: every overlay, named, with the class-colour legend.
CONTACT_SHEET = "contact_sheet.png"


def contact_sheet(overlays: Sequence[Path], names: Sequence[str], class_names: Sequence[str], path: Path,
                  thumb: int = 192, columns: int = 4) -> Path:
    """One PNG of all the overlays (each fitted in ``thumb`` px, its name under it) and the class colours."""
    from PIL import ImageDraw

    from .evaluation import legend_strip

    cols = min(columns, len(overlays))
    rows = -(-len(overlays) // cols)
    cell_h = thumb + 16
    sheet = Image.new("RGB", (cols * (thumb + 6), rows * cell_h), (255, 255, 255))
    draw = ImageDraw.Draw(sheet)
    for k, (file, name) in enumerate(zip(overlays, names)):
        with Image.open(file) as im:
            im = im.convert("RGB")
            im.thumbnail((thumb, thumb))
        x, y = (k % cols) * (thumb + 6), (k // cols) * cell_h
        sheet.paste(im, (x, y))
        draw.text((x + 2, y + thumb + 2), name[:30], fill=(0, 0, 0))
    legend = Image.fromarray(legend_strip(class_names, sheet.width))
    out = Image.new("RGB", (sheet.width, sheet.height + legend.height), (255, 255, 255))
    out.paste(sheet, (0, 0))
    out.paste(legend, (0, sheet.height))
    return save_image(out, path)


def _unique_names(files: Sequence[Path]) -> List[str]:
    """File stems, with a counter where two files share one (a.png and a.jpg)."""
    seen: dict = {}
    names = []
    for f in files:
        stem = f.stem
        seen[stem] = seen.get(stem, 0) + 1
        names.append(stem if seen[stem] == 1 else f"{stem}-{seen[stem]}")
    return names
