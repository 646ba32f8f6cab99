"""Files as the SAM online demo gives them, rendered by its own rules (segment-anything's demo/ and a copy of the
demo's site, MiscellaneousStuff/meta-sam-demo, src/components/), for tests of reading them back.

- a cut-out: the object's pixels on a canvas at the upload's size (shrunk by sqrt(1,677,721 / area) above that many
  pixels), soft alpha at the edge, cropped to the object's box, saved as RGBA PNG;
- a screenshot: the page with the image at the page's size; after a click the outside dimmed to 50% over black with a
  #1d85bb outline (3 px at the model's 1024 scale, 80% opacity, a soft glow) and a #40E0D0 dot at each positive
  click (#FFC0CB for negative); while hovering the mask tinted rgb(0,114,189) at 40%; in Everything mode each mask
  in a colour of detectron2's palette at 40%.

The resampling is PIL's (as a browser's), not OpenCV's, which the reader uses.
"""
from __future__ import annotations

import io
import math

import cv2
import numpy as np
from PIL import Image, ImageDraw

PALETTE = [(0, 114, 189), (217, 83, 25), (237, 177, 32), (126, 47, 142), (119, 172, 48), (77, 190, 238)]
OUTLINE, POSITIVE, NEGATIVE = (0x1D, 0x85, 0xBB), (0x40, 0xE0, 0xD0), (0xFF, 0xC0, 0xCB)


def soft(mask: np.ndarray, sigma: float = 1.2) -> np.ndarray:
    """A binary mask with SAM's soft edge: float in [0, 1]."""
    return np.clip(cv2.GaussianBlur(mask.astype(np.float32), (0, 0), sigma), 0, 1)


def resized(a: np.ndarray, w: int, h: int) -> np.ndarray:
    if a.dtype == np.uint8:
        return np.array(Image.fromarray(a).resize((w, h), Image.BILINEAR))
    return np.array(Image.fromarray(a.astype(np.float32), "F").resize((w, h), Image.BILINEAR))


def cutout(exported: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """'Cut out object': RGBA cropped to the object's box, at the upload's scale or the demo's shrink of a big upload."""
    h, w = exported.shape[:2]
    image, alpha = exported, soft(mask)
    if h * w > 1677721:
        s = math.sqrt(1677721 / (h * w))
        nw, nh = int(w * s), int(h * s)
        image, alpha = resized(exported, nw, nh), np.clip(resized(alpha, nw, nh), 0, 1)
    a = np.round(alpha * 255).astype(np.uint8)
    ys, xs = np.nonzero(a > 0)
    rgba = np.dstack([image, a])[ys.min():ys.max() + 1, xs.min():xs.max() + 1]
    rgba[rgba[..., 3] == 0, :3] = 0  # a canvas' transparent pixels are transparent black
    return rgba


def _page(width: int, height: int, rng) -> np.ndarray:
    """A page around the image: a light background, a toolbar, a few buttons and lines of 'text'."""
    page = Image.new("RGB", (width, height), (246, 247, 249))
    d = ImageDraw.Draw(page)
    d.rectangle([0, 0, width, 44], fill=(28, 30, 33))
    for i in range(6):
        x = 20 + 150 * i
        d.rounded_rectangle([x, 10, x + 120, 34], radius=6, fill=(60, 64, 70))
        d.text((x + 10, 16), f"Tool {i}", fill=(230, 230, 230))
    for j in range(12):
        y = 70 + 28 * j
        d.rectangle([16, y, 16 + int(rng.integers(80, 220)), y + 10], fill=(180, 184, 190))
    return np.array(page)


def _disc(layer: np.ndarray, centre, radius: float, colour) -> None:
    cv2.circle(layer, (int(round(centre[0])), int(round(centre[1]))), int(round(radius)), colour, -1, cv2.LINE_AA)


def _inner_point(mask: np.ndarray):
    dist = cv2.distanceTransform(mask.astype(np.uint8), cv2.DIST_L2, 5)
    y, x = np.unravel_index(dist.argmax(), dist.shape)
    return x, y


def screenshot(exported: np.ndarray, masks, mode: str, scale: float, offset, page=(1500, 1200), seed: int = 0,
               jpeg: int = 0) -> bytes:
    """The page with ``exported`` shown at ``scale`` at ``offset`` (x, y) and ``masks`` (list of bool arrays at the
    exported size) drawn as the demo draws them in ``mode``: 'click', 'hover' or 'everything'. PNG or JPEG bytes."""
    rng = np.random.default_rng(seed)
    h, w = exported.shape[:2]
    sw, sh = int(round(w * scale)), int(round(h * scale))
    shown = resized(exported, sw, sh).astype(np.float32)
    alphas = [np.clip(resized(soft(m), sw, sh), 0, 1)[..., None] for m in masks]
    if mode == "click":
        a = alphas[0]
        out = shown * (0.5 + 0.5 * a)
        unit = sw / 1024  # the outline's 3 px are at the model's 1024 scale
        line = np.zeros((sh, sw), np.float32)
        contours, _ = cv2.findContours((a[..., 0] >= 0.5).astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
        cv2.drawContours(line, contours, -1, 1.0, max(1, int(round(3 * unit))), cv2.LINE_AA)
        glow = np.clip(cv2.GaussianBlur(line, (0, 0), 2.5 * unit + 0.5) * 1.5, 0, 1) * 0.35
        for layer, opacity in ((glow, 1.0), (line, 0.8)):
            al = (layer * opacity)[..., None]
            out = out * (1 - al) + np.float32(OUTLINE) * al
        dots = np.zeros((sh, sw, 3), np.uint8)
        dot_alpha = np.zeros((sh, sw), np.uint8)
        for m, colour in ((a[..., 0] >= 0.5, POSITIVE), (a[..., 0] < 0.5, NEGATIVE)):
            x, y = _inner_point(m)
            _disc(dots, (x, y), 6, colour)
            _disc(dot_alpha, (x, y), 6, 255)
        al = (dot_alpha.astype(np.float32) / 255)[..., None]
        out = out * (1 - al) + dots.astype(np.float32) * al
    else:
        out = shown.copy()
        for k, a in enumerate(alphas):
            colour = np.float32(PALETTE[0 if mode == "hover" else k % len(PALETTE)])
            out = out * (1 - 0.4 * a) + colour * 0.4 * a
    canvas = _page(*page, rng)
    x0, y0 = offset
    canvas[y0:y0 + sh, x0:x0 + sw] = np.clip(np.round(out), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    if jpeg:
        Image.fromarray(canvas).save(buf, format="JPEG", quality=jpeg)
    else:
        Image.fromarray(canvas).save(buf, format="PNG")
    return buf.getvalue()


def png(rgba: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgba, "RGBA" if rgba.shape[-1] == 4 else "RGB").save(buf, format="PNG")
    return buf.getvalue()


def solid(mask: np.ndarray) -> np.ndarray:
    """A mask as SAM gives one: its holes filled (PurdueShapes' masks leave out the shapes' black texture pixels)."""
    out = np.zeros(mask.shape, np.uint8)
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    cv2.drawContours(out, contours, -1, 1, -1)
    return out > 0
