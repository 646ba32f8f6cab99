"""dlstudio-aspp: ASPP at DLStudio's mUNet bottleneck, pluggable losses, COCO and SAM tools.

Heavy modules (torch, DLStudio) load on first use, so ``dlstudio-aspp --help`` is fast.
"""
import importlib

__version__ = "0.1.0"

_LAZY = {
    "ASPP": "aspp",
    "mUNetASPP": "model",
    "from_stock_checkpoint": "model",
    "model_summary": "model",
    "SemanticSegmentationASPP": "segmentation",
    "PurdueShapes5MultiObjectDataset": "data.shapes",
    "COCOSegmentationDataset": "data.coco",
    "dice_loss": "losses",
    "DiceLoss": "losses",
    "DiceMSELoss": "losses",
    "get_loss": "losses",
    "RunSpec": "spec",
    "RunCard": "card",
    "GridFolder": "grid",
    "train_and_score": "runner",
    "predict": "inference",
}

__all__ = sorted(_LAZY)


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'dlstudio_aspp' has no attribute {name!r}")
