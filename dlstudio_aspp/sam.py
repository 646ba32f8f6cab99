"""Segment Anything (SAM) masks next to mUNet's, and scored against the ground truth.

Two ways to get SAM masks:

(a) **Local SAM** (``pip install -e ".[sam]"``, i.e. the ``segment_anything`` package) with
    a checkpoint you download yourself from the SAM repository
    (https://github.com/facebookresearch/segment-anything#model-checkpoints:
    ``sam_vit_b_01ec64.pth``, ``sam_vit_l_0b3195.pth``, ``sam_vit_h_4b8939.pth``; MobileSAM's
    ``mobile_sam.pt`` with ``--sam-model vit_t`` when the ``mobile_sam`` package is
    installed). Nothing is downloaded by this code.

    - *Box prompts*: each ground-truth object box is one prompt; the mask SAM returns for
      it takes that box's class. SAM is class-agnostic, so this is how a SAM mask is
      matched to a class.
    - *Everything*: ``SamAutomaticMaskGenerator``; the union of its masks, except those
      covering more than ``everything_max_area`` of the image (the background segment),
      is scored against the union of the ground-truth classes.
    - Small images (64x64 PurdueShapes) are upscaled with bicubic interpolation by an
      integer factor so that the long side is about ``sam_size`` pixels (1024, SAM's own
      input size); box prompts are scaled by the same factor, and each returned mask is
      brought back by averaging every factor x factor block and keeping blocks that are
      at least half covered.

(b) **Files saved from the online demo** (``--sam-masks DIR``): the demo has no mask download; its
    cut-outs and screenshots (or whole-image masks) are read back by :mod:`dlstudio_aspp.demo_files`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List

import numpy as np
import torch
import torch.nn.functional as F

from .masks import mask_truth
from . import spec as _spec  # SAM_MODELS: the architectures --sam-model names
from .errors import MissingFileError, UserError

CHECKPOINT_HELP = ("download the official checkpoint from https://github.com/facebookresearch/segment-anything#model-checkpoints "
                   "(vit_b: sam_vit_b_01ec64.pth, vit_l: sam_vit_l_0b3195.pth, vit_h: sam_vit_h_4b8939.pth) "
                   "or MobileSAM's mobile_sam.pt (vit_t), and pass it with --sam-checkpoint")


def _segment_anything():
    try:
        import segment_anything
    except ModuleNotFoundError:
        raise UserError("SAM needs the segment_anything package: pip install -e \".[sam]\" "
                         "(or pip install segment-anything); or use --sam-masks with masks saved from the online demo") from None
    return segment_anything


def architecture(model_type: str):
    """An untrained SAM of ``model_type`` (weights come from the user's checkpoint)."""
    if model_type == "vit_t":
        try:
            from mobile_sam import sam_model_registry
        except ModuleNotFoundError:
            raise UserError("--sam-model vit_t (MobileSAM) needs the mobile_sam package: "
                            "pip install git+https://github.com/ChaoningZhang/MobileSAM") from None
        return sam_model_registry["vit_t"]()
    return _segment_anything().sam_model_registry[model_type]()


def load_sam(model_type: str, checkpoint, device="cpu"):
    """Build the SAM architecture ``model_type`` and load ``checkpoint`` (a state_dict) into it."""
    if model_type not in _spec.SAM_MODELS:
        raise UserError(f"--sam-model must be one of {', '.join(_spec.SAM_MODELS)}, got {model_type!r}")
    path = Path(checkpoint) if checkpoint else None
    if path is None or not path.is_file():
        raise MissingFileError(f"SAM checkpoint {checkpoint!r} not found: {CHECKPOINT_HELP}")
    sam = architecture(model_type)
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a torch file, truncated, or pickled code (refused by weights_only)
        raise UserError(f"{path} is not a SAM checkpoint that torch can read safely ({type(exc).__name__}); {CHECKPOINT_HELP}") from None
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict):
        raise UserError(f"{path} holds a {type(state).__name__}, not a SAM state_dict; {CHECKPOINT_HELP}")
    own = sam.state_dict()
    problems = [f"{k!r} has shape {tuple(state[k].shape)} in the checkpoint, {tuple(v.shape)} in SAM {model_type}"
                for k, v in own.items() if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(v.shape)]
    problems += [f"{k!r} is not in SAM {model_type}" for k in state if k not in own]
    problems += [f"{k!r} is missing from the checkpoint" for k in own if k not in state]
    if problems:
        raise UserError(f"{path} does not fit SAM {model_type}: {problems[0]} ({len(problems)} keys differ); "
                        "check --sam-model (vit_b, vit_l, vit_h, vit_t)")
    sam.load_state_dict(state)
    return sam.to(device).eval()


def upscale_factor(size: int, sam_size: int = 1024) -> int:
    return max(1, int(round(sam_size / size)))


def downscale_mask(mask: np.ndarray, factor: int) -> np.ndarray:
    """(H*f, W*f) bool -> (H, W) bool: a pixel is kept when at least half of its f x f block is."""
    if factor == 1:
        return mask.astype(bool)
    t = torch.from_numpy(mask.astype(np.float32))[None, None]
    return (F.avg_pool2d(t, factor)[0, 0] >= 0.5).numpy()


def boxes_by_class(bbox_tensor: torch.Tensor, mask: torch.Tensor) -> Dict[int, List[List[float]]]:
    """Non-empty [x1, y1, x2, y2] boxes per class from an item's (slots, C, 4) bbox_tensor."""
    out: Dict[int, List[List[float]]] = {}
    for c in range(bbox_tensor.shape[1]):
        if not mask_truth(mask[c]).any():
            continue
        for b in bbox_tensor[:, c]:
            if b.abs().sum() > 0:
                out.setdefault(c, []).append([float(v) for v in b])
    return out


class SamRunner:
    """Box-prompted and automatic SAM masks for one image at a time."""

    def __init__(self, sam, sam_size: int = 1024, points_per_side: int = 16, everything_max_area: float = 0.5):
        from segment_anything import SamAutomaticMaskGenerator, SamPredictor

        self.predictor = SamPredictor(sam)
        self.generator = SamAutomaticMaskGenerator(sam, points_per_side=points_per_side)
        self.sam_size = sam_size
        self.everything_max_area = everything_max_area

    def _prepare(self, image: torch.Tensor):
        """(3, H, W) float [0,255] -> upscaled (H*f, W*f, 3) uint8 and the factor f."""
        h = image.shape[-2]
        f = upscale_factor(h, self.sam_size)
        im = image[None].float()
        if f > 1:
            im = F.interpolate(im, scale_factor=f, mode="bicubic", align_corners=False)
        return im[0].clamp(0, 255).round().byte().permute(1, 2, 0).numpy(), f

    def box_masks(self, image: torch.Tensor, boxes: Dict[int, List[List[float]]], num_classes: int) -> np.ndarray:
        """(C, H, W) bool: per class, the union of SAM's masks for that class's box prompts."""
        arr, f = self._prepare(image)
        h, w = image.shape[-2:]
        out = np.zeros((num_classes, h, w), bool)
        if not boxes:
            return out
        self.predictor.set_image(arr)
        for c, blist in boxes.items():
            for b in blist:
                box = np.array([b[0] * f, b[1] * f, (b[2] + 1) * f - 1, (b[3] + 1) * f - 1], dtype=np.float32)
                masks, _, _ = self.predictor.predict(box=box, multimask_output=False)
                out[c] |= downscale_mask(masks[0], f)
        return out

    def everything(self, image: torch.Tensor) -> np.ndarray:
        """(H, W) bool: union of the automatic masks, without background-sized segments."""
        arr, f = self._prepare(image)
        keep = np.zeros(arr.shape[:2], bool)
        for m in self.generator.generate(arr):
            if m["segmentation"].mean() <= self.everything_max_area:
                keep |= m["segmentation"]
        return downscale_mask(keep, f)
