"""``SemanticSegmentationASPP``: DLStudio's SemanticSegmentation with any loss and real metrics.

Use it exactly as the stock class::

    segmenter = SemanticSegmentationASPP(dl_studio=dls, max_num_objects=5)
    train = segmenter.PurdueShapes5MultiObjectDataset(dl_studio=dls, segmenter=segmenter,
                train_or_test='train', dataset_file='PurdueShapes5MultiObject-10000-train.gz')
    ...
    model = segmenter.mUNetASPP(skip_connections=True, depth=16)
    segmenter.run_code_for_training_for_semantic_segmentation(model, loss='dice+mse:20')
    segmenter.run_code_for_testing_semantic_segmentation(model)

``PurdueShapes5MultiObjectDataset`` here is the fast, safely cached loader of
:mod:`dlstudio_aspp.data.shapes`; ``mUNetASPP`` is :class:`dlstudio_aspp.model.mUNetASPP`.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import torch

from .data.shapes import PurdueShapes5MultiObjectDataset as _FastShapes
from .dlstudio_glue import default_num_workers, headless, save_instead_of_show
from .evaluation import evaluate, save_grid
from .metrics import format_table, thresholds_for
from .model import DLStudio, model_summary, mUNetASPP as _mUNetASPP
from .training import TrainOptions, class_names, mask_values, train


def card_path(path_saved_model) -> Path:
    """The JSON 'model card' kept beside the weights (mask convention, config, loss)."""
    p = Path(path_saved_model)
    return p.with_name(p.name + ".json")


def model_config(net) -> dict:
    """What it takes to rebuild ``net``: mUNetASPP's own config, or that of a stock mUNet."""
    cfg = getattr(net, "config", None)
    if cfg:
        return dict(cfg)
    if hasattr(net, "skip128dsDN") and hasattr(net, "conv_out"):  # DLStudio's own mUNet
        return {"class": type(net).__name__, "skip_connections": net.skip128dsDN.skip_connections,
                "depth": 2 * net.depth, "num_classes": net.conv_out.out_channels, "aspp": False}
    return {"class": type(net).__name__}


def read_card(path_saved_model) -> dict:
    p = card_path(path_saved_model)
    if not p.is_file():
        return {}
    return json.loads(p.read_text())


class SemanticSegmentationASPP(DLStudio.SemanticSegmentation):
    """Stock constructor; training takes any loss, testing scores the whole test set.

    Args:
        dl_studio, max_num_objects, dataserver_train, dataserver_test,
        dataset_file_train, dataset_file_test: as stock.
        out_dir: where evaluation grids and metrics go; default: the folder of
            ``dl_studio.path_saved_model``. On a machine with no display,
            ``dl_studio.display_tensor_as_image`` is redirected to PNG files in
            ``out_dir/displays/``, so stock methods that show images never block.
    """

    PurdueShapes5MultiObjectDataset = _FastShapes
    mUNetASPP = _mUNetASPP

    def __init__(self, dl_studio, max_num_objects, dataserver_train=None, dataserver_test=None,
                 dataset_file_train=None, dataset_file_test=None, *, out_dir: Optional[str] = None):
        super().__init__(dl_studio, max_num_objects, dataserver_train, dataserver_test, dataset_file_train, dataset_file_test)
        self.out_dir = Path(out_dir) if out_dir else Path(dl_studio.path_saved_model).resolve().parent
        if headless():  # stock code paths that call plt.show() write PNGs instead
            save_instead_of_show(dl_studio, self.out_dir / "displays")
        self.history = None
        self.metrics = None
        self.samples = []  # (image, mask, output) of the first test images, from the last evaluation

    def load_PurdueShapes5MultiObject_dataset(self, dataserver_train, dataserver_test, num_workers: Optional[int] = None):
        """As stock, with a worker count the machine has (stock asks for 4)."""
        workers = default_num_workers(num_workers)
        bs = self.dl_studio.batch_size
        self.train_dataloader = torch.utils.data.DataLoader(dataserver_train, batch_size=bs, shuffle=True, num_workers=workers)
        self.test_dataloader = torch.utils.data.DataLoader(dataserver_test, batch_size=bs, shuffle=False, num_workers=workers)

    def run_code_for_training_for_semantic_segmentation(self, net, loss=None, **options):
        """Stock training with any loss. ``options`` are :class:`TrainOptions` fields.

        Returns the per-iteration history (also written next to the model as
        ``<path_saved_model>.history.json`` / ``.csv``). The trained copy of ``net`` is
        kept as ``self.trained_net`` and saved at ``path_saved_model`` as stock does.
        """
        if not hasattr(self, "train_dataloader"):
            raise ValueError("no training data: call segmenter.load_PurdueShapes5MultiObject_dataset(train, test) first")
        opts = TrainOptions(loss=loss if loss is not None else "mse", **options)
        dataset = self.train_dataloader.dataset
        card = {
            "model": model_config(net),
            "normalize_masks": opts.normalize_masks,
            "mask_values": mask_values(dataset),
            "class_names": class_names(dataset) or list(getattr(self.dl_studio, "class_labels", [])),
            "image_size": list(self.dl_studio.image_size),
            "train": opts.to_json(),
        }
        card_path(self.dl_studio.path_saved_model).parent.mkdir(parents=True, exist_ok=True)
        card_path(self.dl_studio.path_saved_model).write_text(json.dumps(card, indent=2))
        self.trained_net, self.history = train(self, net, opts)
        return self.history

    def run_code_for_testing_semantic_segmentation(self, net, *, grid_images: int = 4, save_to: Optional[str] = None,
                                                   progress: bool = True, load_saved: bool = True,
                                                   batch_size: Optional[int] = 32):
        """Score ``net`` (loaded from ``path_saved_model``, as stock) on the whole test set.

        Prints a per-class table, writes ``<path_saved_model>.metrics.json`` and a PNG
        grid of the first ``grid_images`` test images, and returns the metrics dict.
        Unlike stock, the network runs in eval mode (BatchNorm uses running statistics),
        so the scores do not depend on how the images are batched: ``batch_size``
        (default 32, faster on CPU) re-batches the test set; None uses
        ``self.test_dataloader`` as it is.
        """
        if not hasattr(self, "test_dataloader"):
            raise ValueError("no test data: call segmenter.load_PurdueShapes5MultiObject_dataset(train, test) first")
        model_path = Path(self.dl_studio.path_saved_model)
        if load_saved:
            if not model_path.is_file():
                raise FileNotFoundError(f"no trained model at {model_path}; train first or set path_saved_model")
            net.load_state_dict(torch.load(model_path, map_location="cpu", weights_only=True))
        device = getattr(self.dl_studio, "device", torch.device("cpu"))
        net = net.to(device)
        card = read_card(model_path)
        dataset = self.test_dataloader.dataset
        values = card.get("mask_values") or mask_values(dataset)
        names = card.get("class_names") or class_names(dataset)
        normalized = bool(card.get("normalize_masks", False))
        thr = thresholds_for(values, normalized)
        loader = self.test_dataloader
        if batch_size is not None and batch_size != loader.batch_size:
            loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                                 num_workers=default_num_workers(loader.num_workers))
        metrics = evaluate(net, loader, thr, device, names, normalized, keep=grid_images, progress=progress)
        samples = self.samples = metrics.pop("samples", [])
        out = Path(save_to) if save_to else self.out_dir
        if samples:
            metrics["grid"] = str(save_grid(samples, thr, names, out / f"{model_path.name}.test_grid.png",
                                            title=f"{model_path.name}: mIoU {metrics['miou']:.3f}"))
        metrics["model"] = card.get("model", {})
        (model_path.with_name(model_path.name + ".metrics.json")).write_text(json.dumps(metrics, indent=2))
        print(format_table(metrics))
        print(f"scored {metrics['num_images']} test images; metrics in {model_path.name}.metrics.json")
        self.metrics = metrics
        return metrics

    @staticmethod
    def describe(net, image_size=(64, 64)) -> str:
        """Parameters and forward GFLOPs per image, with and without the ASPP block."""
        size = tuple(image_size)
        on = model_summary(net, size)
        where = f"forward GFLOPs per {size[0]}x{size[1]} image"
        aspp = getattr(net, "aspp", None)
        if aspp is None:
            return f"learnable parameters: {on['params']:,} (no ASPP); {where}: {on['gflops']:.3f}"
        net.aspp = None  # the same network with the bottleneck left as stock has it
        try:
            off = model_summary(net, size)
        finally:
            net.aspp = aspp
        return (f"learnable parameters: {on['params']:,} with ASPP, {off['params']:,} without (ASPP adds "
                f"{on['aspp_params']:,}); {where}: {on['gflops']:.3f} with ASPP, {off['gflops']:.3f} without")
