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

from .accel import quiet_worker
from .card import RunCard, model_config
from .data.shapes import PurdueShapes5MultiObjectDataset as _FastShapes
from .dlstudio_glue import default_num_workers, headless, save_instead_of_show
from .errors import UserError
from .losses import get_loss
from .registry import dataset_kind
from .model import DLStudio, describe, mUNetASPP as _mUNetASPP
from .runner import floors_for, score_run, train_run
from .spec import RunSpec


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
        quiet = quiet_worker if workers else None  # Ctrl-C/SIGTERM: the checkpoint message, no worker traceback
        self.train_dataloader = torch.utils.data.DataLoader(dataserver_train, batch_size=bs, shuffle=True, num_workers=workers,
                                                            worker_init_fn=quiet)
        self.test_dataloader = torch.utils.data.DataLoader(dataserver_test, batch_size=bs, shuffle=False, num_workers=workers,
                                                           worker_init_fn=quiet)

    def _device(self) -> torch.device:
        return getattr(self.dl_studio, "device", torch.device("cpu"))

    def _train_set(self):
        """The training set loaded by :meth:`load_PurdueShapes5MultiObject_dataset`, or None before it."""
        return getattr(getattr(self, "train_dataloader", None), "dataset", None)

    def spec_for(self, loss=None, *, recipe: str = "stock", **options) -> RunSpec:
        """The run's :class:`RunSpec`: DLStudio's ``learning_rate``, ``momentum``, ``epochs`` and
        ``batch_size`` (and the training set's kind, :func:`~dlstudio_aspp.registry.dataset_kind`: a COCO
        set turns on its defaults, augmentation and normalised inputs), then the recipe, then ``loss`` and
        ``options`` (RunSpec fields); validated."""
        dls = self.dl_studio
        base = dict(lr=dls.learning_rate, momentum=dls.momentum, epochs=dls.epochs, batch_size=dls.batch_size)
        if self._train_set() is not None:
            base["dataset"] = dataset_kind(self._train_set())
        explicit = dict(options, **({"loss": loss} if loss is not None else {}))
        return RunSpec.build(recipe, base=base, **explicit).validate()

    def run_code_for_training_for_semantic_segmentation(self, net, loss=None, *, recipe: str = "stock",
                                                        resume: bool = False, perf_file: Optional[str] = None, **options):
        """Stock training with any loss or recipe. ``options`` are :class:`RunSpec` fields.

        ``recipe`` names a set of options (:data:`dlstudio_aspp.spec.RECIPES`):
        ``'stock'`` (the default, stock DLStudio's loop) or ``'modern'``; ``loss`` and
        ``options`` override it, and DLStudio's ``learning_rate``, ``momentum``, ``epochs``
        and ``batch_size`` fill what neither sets. ``resume`` continues from the run's
        checkpoint; ``perf_file`` moves stock's ``performance_numbers_<epochs>.txt``.
        Everything is checked before any file is written.

        Returns the per-iteration history (also written next to the model as
        ``<path_saved_model>.history.json`` / ``.csv``). The trained copy of ``net`` is
        kept as ``self.trained_net`` and saved at ``path_saved_model`` as stock does,
        with its run card (``<path_saved_model>.json``) beside it.
        """
        if not hasattr(self, "train_dataloader"):
            raise UserError("no training data: call segmenter.load_PurdueShapes5MultiObject_dataset(train, test) first")
        dls = self.dl_studio
        spec = self.spec_for(loss, recipe=recipe, **options)
        config = model_config(net)  # the network given is what trains: record its depth, ASPP and rates
        spec = spec.replace(**{k: config[k] for k in ("depth", "aspp") if k in config})
        block = getattr(net, "aspp", None)
        if getattr(block, "rates", None) is not None:
            spec = spec.replace(rates=tuple(block.rates), aspp_dropout=block.dropout)
        loss_fn = get_loss(spec.loss)
        card = RunCard.for_training(dls.path_saved_model, net, self.train_dataloader.dataset, dls.image_size, spec,
                                    loss_fn, class_names=getattr(dls, "class_labels", ()))
        self.trained_net, self.history = train_run(spec, card, net, self.train_dataloader, self._device(),
                                                   loss_fn=loss_fn, resume=resume, perf_file=perf_file)
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
        faster on CPU) re-batches the test set; None keeps ``self.test_dataloader``'s.
        """
        if not hasattr(self, "test_dataloader"):
            raise UserError("no test data: call segmenter.load_PurdueShapes5MultiObject_dataset(train, test) first")
        dataset = self.test_dataloader.dataset
        card = RunCard.load_if_present(self.dl_studio.path_saved_model)
        if card is None:  # weights from elsewhere (or none): stock's convention
            card = RunCard.stock(self.dl_studio.path_saved_model, net, dataset, self.dl_studio.image_size,
                                 class_names=getattr(self.dl_studio, "class_labels", ()))
        if load_saved:
            card.load_weights(net)
        grid_path = Path(save_to) / card.files.test_grid.name if save_to else self.out_dir / card.files.test_grid.name
        metrics = score_run(card, net, dataset, self._device(), grid_images=grid_images, progress=progress,
                            batch_size=batch_size or self.test_dataloader.batch_size,
                            workers=self.test_dataloader.num_workers, grid_path=grid_path,
                            compile=bool(card.spec.get("compile")),
                            floors=floors_for(self._train_set(), dataset))
        self.samples = metrics.pop("samples")
        self.metrics = metrics
        return metrics

    @staticmethod
    def describe(net, image_size=(64, 64)) -> str:
        """Parameters and forward GFLOPs per image, with and without the ASPP block (:func:`model.describe`)."""
        return describe(net, image_size)

