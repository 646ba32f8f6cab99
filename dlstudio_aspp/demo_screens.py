"""Screenshots of the SAM online demo: where the exported image sits in the page, and the mask drawn on it.

The image is found by SIFT features matched to the exported image (a similarity, by RANSAC), or, in a screenshot with
too few features, by normalised template matching over scales. The mask then comes from how the demo draws one
(segment-anything's ``demo/`` and a copy of the demo's site): after a click the outside is dimmed to half over black,
with a ``#1d85bb`` outline along the mask's edge and a dot at each click; while hovering the object is tinted with
(0, 114, 189) at 40%; in Everything mode each mask has a colour of detectron2's palette at 40%. Pixels that the
drawing leaves undecided (black shown over black, the outline, the dots) take their label from a marker watershed.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Tuple

import numpy as np

from .errors import UserError

#: While hovering, the mask is drawn in this colour at HOVER_OPACITY.
HOVER_COLOUR = (0, 114, 189)
HOVER_OPACITY = 0.4
#: Everything mode: each mask in one of detectron2's colours (its palette's start, HOVER_COLOUR first).
PALETTE = (HOVER_COLOUR, (217, 83, 25), (237, 177, 32), (126, 47, 142), (119, 172, 48), (77, 190, 238),
           (162, 20, 47), (77, 77, 77), (153, 153, 153), (255, 0, 0), (255, 128, 0), (191, 191, 0), (0, 255, 0),
           (0, 0, 255), (170, 0, 255), (85, 85, 0), (85, 170, 0), (85, 255, 0), (170, 85, 0), (170, 170, 0))
#: After a click: the outside dimmed to DIM of its brightness, the outline and the click dots drawn over it.
DIM = 0.5
OVERLAY_COLOURS = ((0x1D, 0x85, 0xBB), (0x40, 0xE0, 0xD0), (0xFF, 0xC0, 0xCB))  # outline, positive, negative click
_FIT = 3 * 16.0 ** 2      # a pixel is explained by a way of drawing when its squared error is below this (3 channels)
_MARGIN = 3 * 7.0 ** 2    # ... and decided when the other way is worse by at least this
_MIN_INLIERS = 10         # a screenshot shows the image when this many SIFT matches agree on one scale and offset


def cv2():
    try:
        import cv2 as module
    except ModuleNotFoundError:
        raise UserError("reading files saved from the SAM demo needs OpenCV: pip install opencv-python-headless") from None
    return module


@dataclass
class Features:
    """SIFT keypoints and descriptors of one picture (computed once per file and per exported image)."""
    points: np.ndarray
    descriptors: Optional[np.ndarray]

    @classmethod
    def of(cls, rgb: np.ndarray) -> "Features":
        cv = cv2()
        grey = cv.cvtColor(np.ascontiguousarray(rgb[..., :3]), cv.COLOR_RGB2GRAY)
        scale = 1.0
        if max(grey.shape) > 1400:  # SIFT is scale-invariant; a large page is searched at a smaller size
            scale = 1400 / max(grey.shape)
            grey = cv.resize(grey, None, fx=scale, fy=scale, interpolation=cv.INTER_AREA)
        kps, desc = cv.SIFT_create(nfeatures=6000).detectAndCompute(grey, None)
        return cls(np.array([k.pt for k in kps], np.float32).reshape(-1, 2) / scale, desc)


def locate(shot: Features, image: Features) -> Tuple[Optional[np.ndarray], int]:
    """The 2x3 similarity taking the exported image into the screenshot, and how many matches agree on it."""
    cv = cv2()
    if shot.descriptors is None or image.descriptors is None or len(shot.points) < 8 or len(image.points) < 8:
        return None, 0
    pairs = cv.BFMatcher(cv.NORM_L2).knnMatch(image.descriptors, shot.descriptors, k=2)
    good = [p[0] for p in pairs if len(p) == 2 and p[0].distance < 0.75 * p[1].distance]
    if len(good) < 8:
        return None, 0
    src = image.points[[m.queryIdx for m in good]]
    dst = shot.points[[m.trainIdx for m in good]]
    matrix, inliers = cv.estimateAffinePartial2D(src, dst, method=cv.RANSAC, ransacReprojThreshold=3.0,
                                                 maxIters=5000, confidence=0.999)
    if matrix is None:
        return None, 0
    count = int(inliers.sum())
    angle = math.degrees(math.atan2(matrix[1, 0], matrix[0, 0]))
    if count < _MIN_INLIERS or abs(angle) > 2.0 or math.hypot(matrix[0, 0], matrix[1, 0]) < 0.05:
        return None, count
    return matrix, count


def locate_by_template(shot_rgb: np.ndarray, exported: np.ndarray) -> Optional[np.ndarray]:
    """The same similarity found by normalised template matching over scales (OpenCV's ``matchTemplate``): for a
    screenshot with too few features (flat shapes on black, whose every edge the outline covers)."""
    cv = cv2()
    grey = lambda a: cv.cvtColor(np.ascontiguousarray(a[..., :3]), cv.COLOR_RGB2GRAY).astype(np.float32)  # noqa: E731
    page, image = grey(shot_rgb), grey(exported)
    q = max(1, max(page.shape) // 400)
    small = cv.resize(page, (page.shape[1] // q, page.shape[0] // q), interpolation=cv.INTER_AREA)
    best = (-1.0, 1.0, 0, 0)
    for scale in np.geomspace(0.15, 2.0, 90):
        w, h = round(image.shape[1] * scale / q), round(image.shape[0] * scale / q)
        if w < 16 or h < 16 or w > small.shape[1] or h > small.shape[0]:
            continue
        res = cv.matchTemplate(small, cv.resize(image, (w, h), interpolation=cv.INTER_AREA), cv.TM_CCOEFF_NORMED)
        _, val, _, (x, y) = cv.minMaxLoc(res)
        if val > best[0]:
            best = (val, scale, x * q, y * q)
    val, scale, x0, y0 = best
    if val < 0.5:
        return None
    found = (scale, x0, y0)
    left, top = max(0, x0 - 3 * q), max(0, y0 - 3 * q)
    for fine in scale * np.linspace(0.97, 1.03, 25):  # the full size around the coarse answer
        w, h = round(image.shape[1] * fine), round(image.shape[0] * fine)
        window = page[top:y0 + h + 3 * q, left:x0 + w + 3 * q]
        if w > window.shape[1] or h > window.shape[0]:
            continue
        res = cv.matchTemplate(window, cv.resize(image, (w, h), interpolation=cv.INTER_AREA), cv.TM_CCOEFF_NORMED)
        _, v, _, (x, y) = cv.minMaxLoc(res)
        if v >= val:
            val, found = v, (w / image.shape[1], left + x, top + y)
    scale, x, y = found
    return np.float64([[scale, 0, x], [0, scale, y]])


def _blend_alpha(shown, base, colour):
    """Per pixel, the opacity a of ``colour`` drawn over ``base`` that best gives ``shown``, and the squared error."""
    d = colour - base
    a = np.clip((((shown - base) * d).sum(-1)) / np.maximum((d * d).sum(-1), 1.0), 0.0, 1.0)
    return a, (((base + a[..., None] * d) - shown) ** 2).sum(-1)


def screenshot_mask(rgb: np.ndarray, exported: np.ndarray, matrix: np.ndarray) -> Optional[Tuple[np.ndarray, str, float]]:
    """The mask a screenshot shows, in the screenshot's frame (H, W) bool, how it was drawn, and the share of the
    image's pixels that the drawing explains; None when the located region does not show the image."""
    cv = cv2()
    scale = math.hypot(matrix[0, 0], matrix[1, 0])
    shown_h, shown_w = rgb.shape[:2]
    small = cv.resize(exported, None, fx=scale, fy=scale, interpolation=cv.INTER_AREA if scale < 1 else cv.INTER_LINEAR)
    shift = np.float32([[1, 0, matrix[0, 2]], [0, 1, matrix[1, 2]]])
    ref = cv.warpAffine(small.astype(np.float32), shift, (shown_w, shown_h), flags=cv.INTER_LINEAR)
    inside = cv.warpAffine(np.ones(small.shape[:2], np.float32), shift, (shown_w, shown_h), flags=cv.INTER_LINEAR) > 0.999
    if inside.sum() < 64:
        return None
    s, r = rgb[..., :3].astype(np.float32)[inside], ref[inside]
    same = ((s - r) ** 2).sum(-1)
    dim = ((s - DIM * r) ** 2).sum(-1)
    palette = np.float32(PALETTE)
    guess = (s - (1 - HOVER_OPACITY) * r) / HOVER_OPACITY
    k = ((guess[:, None, :] - palette[None]) ** 2).sum(-1).argmin(1)
    tint = ((s - (1 - HOVER_OPACITY) * r - HOVER_OPACITY * palette[k]) ** 2).sum(-1)
    over, line = np.zeros(len(s), bool), np.zeros(len(s), bool)  # outline and click dots, drawn over either way
    for colour in np.float32(OVERLAY_COLOURS):
        for base in (r, DIM * r):
            a, err = _blend_alpha(s, base, colour)
            over |= (a > 0.1) & (err < _FIT) & (err < np.minimum(same, dim) - _MARGIN)
            line |= (a >= 0.3) & (err < _FIT)
    # Which way the mask is drawn: areas shown dimmed or tinted (an outline is too thin to be an area), and the thin
    # outline that only a click draws. A dark image's dimmed outside looks like itself; its outline still shows.
    width = 2 * max(1, round(3 * scale * max(exported.shape[:2]) / 1024)) + 1
    areas = lambda values: int(_opened(_grid(inside, values), width).sum())  # noqa: E731
    dimmed = areas((dim < same - _MARGIN) & (dim < _FIT))
    tinted = areas((tint < same - _MARGIN) & (tint < _FIT))
    thin = int(line.sum()) - areas(line)
    if dimmed + thin >= tinted:
        how, cost_in, cost_out = "clicked (outside dimmed)", same, dim
    else:
        how, cost_in, cost_out = "hover or everything (tinted)", tint, same
        over, line = np.zeros(len(s), bool), np.zeros(len(s), bool)
    label = cost_in < cost_out
    known = ~over & ~line & (np.minimum(cost_in, cost_out) < _FIT) & (np.abs(cost_in - cost_out) > _MARGIN)
    explained = float((np.minimum(cost_in, cost_out) < _FIT).mean())
    if explained < 0.5 or not (label & known).any():
        return None
    mask = _flood(_grid(inside, label), _grid(inside, known), _grid(inside, line), inside, ref, how.startswith("clicked"))
    return mask, how, explained


def _opened(mask: np.ndarray, width: int) -> np.ndarray:
    cv = cv2()
    kernel = cv.getStructuringElement(cv.MORPH_ELLIPSE, (width, width))
    return cv.morphologyEx(mask.astype(np.uint8), cv.MORPH_OPEN, kernel) > 0


def _grid(inside: np.ndarray, values: np.ndarray) -> np.ndarray:
    out = np.zeros(inside.shape, values.dtype)
    out[inside] = values
    return out


def _flood(label, known, line, inside, ref, clicked: bool) -> np.ndarray:
    """The pixels left undecided (too dark to tell, or under the outline and the click dots) take the label of the
    decided ones that reach them first in a marker watershed (OpenCV's ``watershed``). After a click it floods over
    the outline, so that the outline, which runs along the mask's edge, is where the inside and the outside
    meet, and undecided pixels joined to the frame's edge start as outside (a dark image's dimmed outside looks like itself);
    while hovering it floods over the image's own edges."""
    cv = cv2()
    ys, xs = np.nonzero(inside)
    y0, y1, x0, x1 = ys.min(), ys.max() + 1, xs.min(), xs.max() + 1
    crop = lambda a: np.ascontiguousarray(a[y0:y1, x0:x1])  # noqa: E731
    label, known, line = crop(label), crop(known), crop(line)
    markers = np.zeros(label.shape, np.int32)
    markers[known] = np.where(label[known], 2, 1)
    if clicked:
        count, parts = cv.connectedComponents((~known & ~line).astype(np.uint8), connectivity=4)
        rim = np.unique(np.concatenate([parts[[0, -1], :].ravel(), parts[:, [0, -1]].ravel()]))
        # what borders each undecided part: a dark coat at the frame's edge borders the inside, the dimmed black
        # around flat shapes borders their outline (where a JPEG left it)
        sizes = np.bincount(parts.ravel(), minlength=count)
        outside = []
        for r in (r for r in rim if r > 0 and sizes[r] >= 20):
            part = parts == r
            ring = (cv.dilate(part.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0) & ~part
            votes, ins, walls = int((ring & known).sum()), int((ring & known & label).sum()), int((ring & line).sum())
            if ins <= 0.5 * votes or walls >= 2 * ins or sizes[r] >= 0.5 * part.size:  # (or most of the image)
                outside.append(r)
        markers[np.isin(parts, outside)] = 1  # undecided parts at the frame's edge, cut off from the inside
        height = cv.GaussianBlur(line.astype(np.float32), (0, 0), 1.0)
        relief = np.repeat((np.clip(height, 0, 1) * 255).astype(np.uint8)[..., None], 3, -1)
    else:
        relief = np.clip(crop(ref), 0, 255).astype(np.uint8)
    cv.watershed(relief, markers)
    inner = markers == 2
    seam = markers == -1
    if seam.any():  # the watershed's own boundary pixels: the side most of their neighbours took
        near = cv.blur(inner.astype(np.float32), (3, 3))
        inner[seam] = near[seam] >= 0.5
    if clicked and line.any():  # the outline is centred on the edge: each of its pixels goes to the nearer side
        wall = cv.dilate(line.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
        far = lambda core: cv.distanceTransform((~core).astype(np.uint8), cv.DIST_L2, 5)  # noqa: E731
        d_in, d_out = far(inner & ~wall), far(~inner & ~wall)
        inner[wall] = d_in[wall] < d_out[wall]
    out = np.zeros(inside.shape, bool)
    out[y0:y1, x0:x1] = inner
    return out & inside


def unshow(mask: np.ndarray, matrix: np.ndarray, exported_shape) -> np.ndarray:
    """A mask in the screenshot's frame -> float mask at the exported image's scale."""
    cv = cv2()
    h, w = exported_shape[:2]
    return cv.warpAffine(mask.astype(np.float32), matrix, (w, h), flags=cv.INTER_LINEAR | cv.WARP_INVERSE_MAP)
