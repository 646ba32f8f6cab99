"""``dlstudio-aspp``: the command line's parsers. What each sub-command does is in
:mod:`dlstudio_aspp.commands`; torch and DLStudio are imported there, inside the
sub-commands, so ``dlstudio-aspp --help`` answers at once.

A :class:`~dlstudio_aspp.errors.UserError` (a mistake the user can fix) prints one line
and exits with status 2; set ``DLSTUDIO_ASPP_DEBUG=1`` for its traceback. Any other
exception keeps its traceback. Ctrl-C and SIGTERM stop training after a checkpoint is
written, and exit with status 130.
"""
from __future__ import annotations

import argparse
import signal
import sys
from typing import List, Optional

from . import commands
from .commands import DEFAULT_DATA, parse_ints
from .errors import UserError, debug

__all__ = ["build_parser", "main", "parse_ints"]


def _add_train_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", default="modern", help="training recipe: modern (default) | stock (the homework's)")
    p.add_argument("--head", default=None, help="output layer: dense (default with --recipe modern) | bilinear | stock")
    p.add_argument("--loss", default=None, help="the recipe's loss by default; mse | dice | dice+mse:<scale> | "
                                                "dice+mse:auto | bce | sigmoid-dice | bce+dice")
    p.add_argument("--no-aspp", action="store_true", help="stock mUNet's bottleneck instead of ASPP")
    p.add_argument("--rates", default="2,4,6", help="ASPP dilation rates (default: 2,4,6)")
    p.add_argument("--depth", type=int, default=16, help="mUNet depth (default: 16)")
    p.add_argument("--epochs", type=int, default=None, help="epochs (default: as many as --max-iters needs)")
    p.add_argument("--max-iters", type=int, default=None, help=f"stop after this many iterations (default {commands.RUN_ITERS})")
    p.add_argument("--subset", type=int, default=None, help="train on the first N images only")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--lr", type=float, default=None, help="learning rate (default: the recipe's; stock 1e-4)")
    p.add_argument("--momentum", type=float, default=0.9, help="SGD momentum (default 0.9)")
    p.add_argument("--optimizer", default=None, help="sgd | adam | adamw (default: the recipe's)")
    p.add_argument("--schedule", default=None, help="constant | cosine | onecycle (default: the recipe's)")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--warmup", type=int, default=None, help="iterations of linear warm-up")
    p.add_argument("--grad-clip", type=float, default=None, help="clip the gradient norm to this")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--log-every", type=int, default=100)
    p.add_argument("--checkpoint-every", type=int, default=100, help="iterations between checkpoints (default 100)")
    p.add_argument("--normalize-masks", action="store_true", default=None, help="train a raw-output loss against {0,1} masks")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint (it must exist)")
    p.add_argument("--amp", action="store_true", help="mixed precision (CUDA only)")
    p.add_argument("--cpu", action="store_true", help="do not use a GPU even when there is one")
    p.add_argument("--workers", type=int, default=None, help="DataLoader workers (default: cores - 2, at most 4)")
    p.add_argument("--no-progress", action="store_true")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dlstudio-aspp", description="ASPP at DLStudio's mUNet bottleneck: data, training, experiments, reports, COCO and SAM tools.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("run", help="the main job: fetch the real data, train a short run and evaluate it",
                       description="Fetch PurdueShapes5MultiObject into the default folder (if missing), train mUNet+ASPP "
                                   "with the modern recipe and the dense output layer, score it on the whole test set and "
                                   "write everything to --out.")
    p.add_argument("--data", default=None, help=f"dataroot (default: {DEFAULT_DATA}, fetched when missing)")
    p.add_argument("--fetch", action="store_true", help="download the real data into --data when it is missing")
    p.add_argument("--train-file", default="PurdueShapes5MultiObject-10000-train.gz")
    p.add_argument("--test-file", default="PurdueShapes5MultiObject-1000-test.gz")
    p.add_argument("--out", default="outputs/run", help="output folder (default: outputs/run)")
    _add_train_args(p)
    p.set_defaults(max_iters=commands.RUN_ITERS, func="run")

    p = sub.add_parser("fetch-shapes", help="download the real PurdueShapes5MultiObject files",
                       description="Put PurdueShapes5MultiObject-{10000-train,1000-test,20-train,20-test}.gz in DEST: "
                                   "from the Purdue tarball, else from the DLStudio 1.0.9 sdist on PyPI; sha256-checked.")
    p.add_argument("dest", nargs="?", default=DEFAULT_DATA)
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the Purdue server")
    p.set_defaults(func="fetch_shapes")

    p = sub.add_parser("make-shapes", help="write a SYNTHETIC dataset in the PurdueShapes5MultiObject format",
                       description="Synthetic stand-in, same file format as the real data (labelled SYNTHETIC).")
    p.add_argument("dest")
    p.add_argument("--train", type=int, default=200)
    p.add_argument("--test", type=int, default=40)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func="make_shapes")

    p = sub.add_parser("experiments", help="run the grid: losses x ASPP on/off x seeds, resumable",
                       description="Every loss x ASPP on/off x seed, one folder per run under OUT/runs. Finished runs "
                                   "are skipped; an interrupted run resumes from its checkpoint. Presets: homework "
                                   "(the users' protocol, stock head and recipe, for a GPU), homework-dense (the same "
                                   "budget with the dense head and the modern recipe, bce+dice added to the losses), "
                                   "quick (~20 min on 2 CPU cores), smoke (seconds).")
    p.add_argument("out", help="the grid's folder")
    p.add_argument("--preset", default="quick")
    p.add_argument("--dataset", default="shapes", choices=["shapes", "coco"])
    p.add_argument("--data", default=None, help=f"dataroot (default: {DEFAULT_DATA}; for coco: the build-coco folder)")
    p.add_argument("--train-file", default=None)
    p.add_argument("--test-file", default=None)
    p.add_argument("--losses", default=None, help="comma-separated, e.g. mse,dice,dice+mse:20,bce+dice")
    p.add_argument("--aspp", default=None, choices=["both", "on", "off"])
    p.add_argument("--rates", default=None, help="ASPP rates, e.g. 2,4,6")
    p.add_argument("--seeds", default=None, help="comma-separated seeds, e.g. 0,1,2")
    p.add_argument("--recipe", default=None, help="stock | modern (default: the preset's)")
    p.add_argument("--head", default=None, help="stock | dense | bilinear (default: the preset's)")
    for name, kind in (("epochs", int), ("max-iters", int), ("batch-size", int), ("lr", float), ("momentum", float),
                       ("depth", int), ("train-subset", int), ("test-subset", int), ("log-every", int)):
        p.add_argument(f"--{name}", type=kind, default=None, help="overrides the preset")
    p.add_argument("--normalize-masks", action="store_true", default=None)
    p.add_argument("--amp", action="store_true", default=None)
    p.add_argument("--cpu", action="store_true", default=None)
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-report", action="store_true", help="do not write report.md at the end")
    p.add_argument("--executor", default="serial", choices=["serial", "ray"],
                   help="serial (default: one run after another) or ray (one Ray task per run)")
    p.add_argument("--address", default=None, help="ray: join a running cluster (auto or HOST:PORT); default: a local Ray")
    p.add_argument("--cpus-per-run", type=float, default=1, help="ray: CPUs per run, also its torch threads (default 1)")
    p.add_argument("--gpus-per-run", type=float, default=None,
                   help="ray: GPUs per run, a fraction shares a card (default: 1 when this machine has a GPU, else 0)")
    p.set_defaults(func="experiments")

    p = sub.add_parser("build-coco", help="build a 256x256 segmentation set from COCO",
                       description="Take COCO images with a non-crowd instance of a chosen class whose bbox is at least "
                                   "--min-size on both sides, build one mask channel per class with annToMask, resize to "
                                   "--size and store images, masks and index.json under --out. Re-runs skip finished images.")
    p.add_argument("--coco-root", required=True, help="holds annotations/instances_{train,val}2017.json and {train,val}2017/")
    p.add_argument("--classes", nargs="+", default=["cake", "dog", "motorcycle"], help="COCO category names")
    p.add_argument("--min-size", type=float, default=200)
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--out", required=True)
    p.add_argument("--max-per-class", type=int, default=None, help="cap on images per class and split")
    p.add_argument("--max-per-split", type=int, default=None, help="cap on images per split")
    p.add_argument("--seed", type=int, default=0, help="picks the images when a cap applies")
    p.add_argument("--splits", default="train,test", help="train (COCO train2017) and/or test (val2017)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func="build_coco")

    p = sub.add_parser("sam-compare", help="SAM masks next to mUNet's on a few test images, measured against ground truth",
                       description="Figure (one row per image: SAM overlay | mUNet overlay, ground-truth outlines) and "
                                   "metrics (IoU, boundary F1, completeness, FP/FN rates) as JSON and markdown. SAM masks "
                                   "come from a local checkpoint (--sam-checkpoint) or from PNGs saved from the online demo "
                                   "(--sam-masks DIR, files <index>.png or <index>_<class>.png).")
    p.add_argument("--run", required=True, help="a run folder (saved_model + saved_model.json)")
    p.add_argument("--dataset", default="shapes", choices=["shapes", "coco"])
    p.add_argument("--data", default=None, help=f"dataroot (default: {DEFAULT_DATA}; for coco: the build-coco folder)")
    p.add_argument("--test-file", default="PurdueShapes5MultiObject-1000-test.gz")
    p.add_argument("--count", type=int, default=5, help="number of test images (default 5)")
    p.add_argument("--indices", default=None, help="comma-separated test indices (instead of the first --count)")
    p.add_argument("--seed", type=int, default=None, help="pick --count images at random with this seed")
    p.add_argument("--sam-checkpoint", default=None, help="a SAM checkpoint you downloaded (never downloaded here)")
    p.add_argument("--sam-model", default="vit_b", help="vit_b | vit_l | vit_h | vit_t (MobileSAM)")
    p.add_argument("--sam-masks", default=None, help="folder of PNG masks saved from the SAM online demo")
    p.add_argument("--everything", action="store_true", help="add a SamAutomaticMaskGenerator column")
    p.add_argument("--show-input", action="store_true", help="add a column with the input image")
    p.add_argument("--tolerance", type=int, default=2, help="boundary F1 tolerance in pixels (default 2)")
    p.add_argument("--sam-size", type=int, default=1024, help="small images are upscaled to about this size for SAM")
    p.add_argument("--points-per-side", type=int, default=16, help="grid of the everything mode")
    p.add_argument("--out", default=None, help="output folder (default: <experiments>/sam or <run>/sam)")
    p.add_argument("--cpu", action="store_true")
    p.set_defaults(func="sam_compare")

    p = sub.add_parser("report", help="plots, tables and report.md from an experiments folder",
                       description="Loss curves (best/worst seed, overlay), ASPP on vs off with paired intervals, a "
                                   "qualitative grid, metrics and Dice-scale tables, all from the runs on disk, in report.md.")
    p.add_argument("run_dir")
    p.set_defaults(func="report")

    return parser


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not args.command:
        parser.print_help()
        return 0
    previous = signal.getsignal(signal.SIGTERM)
    try:
        signal.signal(signal.SIGTERM, _sigterm_as_interrupt)  # a batch system's stop saves a checkpoint too
    except ValueError:  # not the main thread
        previous = None
    try:
        return int(getattr(commands, args.func)(args) or 0)
    except UserError as exc:
        if debug():
            raise
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; re-run the same command (with --resume for `run`) to continue", file=sys.stderr)
        return 130
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
