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

from pathlib import Path
from typing import Optional

import torch

from .atomic import write_json
from .card import RunCard
from .data.shapes import PurdueShapes5MultiObjectDataset as _FastShapes
from .dlstudio_glue import default_num_workers, headless, save_instead_of_show
from .errors import MissingFileError, UserError
from .evaluation import evaluate, save_grid
from .losses import get_loss
from .metrics import format_table
from .model import DLStudio, input_dependent_fraction, model_summary, mUNetASPP as _mUNetASPP
from .training import output_kind, recipe_options, train


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

    def _device(self) -> torch.device:
        return getattr(self.dl_studio, "device", torch.device("cpu"))

    def run_code_for_training_for_semantic_segmentation(self, net, loss=None, *, recipe: str = "stock", **options):
        """Stock training with any loss or recipe. ``options`` are :class:`TrainOptions` fields.

        ``recipe`` names a set of options (:data:`dlstudio_aspp.training.RECIPES`):
        ``'stock'`` (the default, stock DLStudio's loop) or ``'modern'``; ``loss`` and
        ``options`` override it. Unset ``epochs``, ``lr`` and ``momentum`` come from
        DLStudio. Everything is checked before any file is written.

        Returns the per-iteration history (also written next to the model as
        ``<path_saved_model>.history.json`` / ``.csv``). The trained copy of ``net`` is
        kept as ``self.trained_net`` and saved at ``path_saved_model`` as stock does,
        with its run card (``<path_saved_model>.json``) beside it.
        """
        if not hasattr(self, "train_dataloader"):
            raise UserError("no training data: call segmenter.load_PurdueShapes5MultiObject_dataset(train, test) first")
        dls = self.dl_studio
        opts = recipe_options(recipe, loss=loss, **options)
        opts.epochs = opts.epochs or dls.epochs
        opts.lr = opts.lr if opts.lr is not None else dls.learning_rate
        opts.momentum = opts.momentum if opts.momentum is not None else dls.momentum
        opts.validate()
        loss_fn = get_loss(opts.loss)
        dataset = self.train_dataloader.dataset
        card = RunCard.for_training(dls.path_saved_model, net, dataset, dls.image_size, output=output_kind(loss_fn),
                                    normalize_masks=opts.normalize_masks, input_scale=opts.input_scale, recipe=recipe,
                                    train=opts.to_json(), class_names=getattr(dls, "class_labels", ()))
        channels = _output_channels(net)
        if channels is not None and channels != len(card.mask_values):
            raise UserError(f"the model has {channels} output channels but the data has {len(card.mask_values)} classes; "
                            f"build it with num_classes={len(card.mask_values)}")
        card.weights.parent.mkdir(parents=True, exist_ok=True)
        self.trained_net, self.history = train(net, self.train_dataloader, opts, card, self._device())
        card.save_weights(self.trained_net)
        self.card = card
        return self.history

    def run_code_for_testing_semantic_segmentation(self, net, *, grid_images: int = 4, save_to: Optional[str] = None,
                                                   progress: bool = True, load_saved: bool = True,
                                                   batch_size: Optional[int] = 32):
        """Score ``net`` (loaded from ``path_saved_model``, as stock) on the whole test set.

        Prints a per-class table, writes ``<path_saved_model>.metrics.json`` and a PNG
        grid of the first ``grid_images`` test images, and returns the metrics dict.
        Input scaling and thresholds come from the run card beside the weights. Unlike
        stock, the network runs in eval mode (BatchNorm uses running statistics), so the
        scores do not depend on how the images are batched: ``batch_size`` (default 32,
        faster on CPU) re-batches the test set; None uses ``self.test_dataloader`` as it is.
        """
        if not hasattr(self, "test_dataloader"):
            raise UserError("no test data: call segmenter.load_PurdueShapes5MultiObject_dataset(train, test) first")
        dataset = self.test_dataloader.dataset
        card = RunCard.load_if_present(self.dl_studio.path_saved_model)
        if card is None:  # weights from elsewhere (or none): stock's convention
            card = RunCard.for_training(self.dl_studio.path_saved_model, net, dataset, self.dl_studio.image_size,
                                        output="raw", normalize_masks=False, input_scale=1.0, recipe="stock", train={},
                                        class_names=getattr(self.dl_studio, "class_labels", ()))
        if load_saved:
            if not card.weights.is_file():
                raise MissingFileError(f"no trained model at {card.weights}; train first or set path_saved_model")
            card.load_weights(net)
        device = self._device()
        net = net.to(device)
        loader = self.test_dataloader
        if batch_size is not None and batch_size != loader.batch_size:
            loader = torch.utils.data.DataLoader(dataset, batch_size=batch_size, shuffle=False,
                                                 num_workers=default_num_workers(loader.num_workers))
        metrics = evaluate(net, loader, card, device, keep=grid_images, progress=progress)
        samples = self.samples = metrics.pop("samples", [])
        out = Path(save_to) if save_to else self.out_dir
        if samples:
            metrics["grid"] = str(save_grid(samples, card.thresholds(), card.class_names, out / card.test_grid.name,
                                            title=f"{card.weights.name}: mIoU {metrics['miou']:.3f}"))
        metrics["model"] = card.model
        write_json(card.metrics_file, metrics)
        print(format_table(metrics))
        print(f"scored {metrics['num_images']} test images; metrics in {card.metrics_file.name}")
        self.metrics = metrics
        return metrics

    @staticmethod
    def describe(net, image_size=(64, 64)) -> str:
        """Parameters and forward GFLOPs per image, with and without the ASPP block."""
        size = tuple(image_size)
        on = model_summary(net, size)
        dense = (f"; output pixels that depend on the input: {input_dependent_fraction(net, size):.0%} "
                 f"(head {getattr(net, 'head', 'stock')!r})")
        where = f"forward GFLOPs per {size[0]}x{size[1]} image"
        aspp = getattr(net, "aspp", None)
        if aspp is None:
            return f"learnable parameters: {on['params']:,} (no ASPP); {where}: {on['gflops']:.3f}{dense}"
        net.aspp = None  # the same network with the bottleneck left as stock has it
        try:
            off = model_summary(net, size)
        finally:
            net.aspp = aspp
        return (f"learnable parameters: {on['params']:,} with ASPP, {off['params']:,} without (ASPP adds "
                f"{on['aspp_params']:,}); {where}: {on['gflops']:.3f} with ASPP, {off['gflops']:.3f} without{dense}")


def _output_channels(net) -> Optional[int]:
    """Output channels of an mUNet's last layer, when it can be read."""
    head = getattr(net, "conv_out", None)
    if isinstance(head, torch.nn.Sequential):
        head = head[-1]
    return getattr(head, "out_channels", None)
