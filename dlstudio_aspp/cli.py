"""``dlstudio-aspp``: the command line's parsers. What each sub-command does is in
:mod:`dlstudio_aspp.commands`; torch and DLStudio are imported there, inside the
sub-commands, so ``dlstudio-aspp --help`` answers at once.

The options of ``run`` and ``experiments`` are derived from
:class:`~dlstudio_aspp.spec.RunSpec`'s fields (:func:`add_spec_options`): a field added
there is a flag of both, with its help, valid values and default.

A :class:`~dlstudio_aspp.errors.UserError` (a mistake the user can fix) prints one line
and exits with status 2 (an :class:`~dlstudio_aspp.errors.UnfinishedError`, work that ran
but did not all finish, with status 1); set ``DLSTUDIO_ASPP_DEBUG=1`` for its traceback. Any other
exception keeps its traceback. Ctrl-C and SIGTERM stop training after a checkpoint is
written, and exit with status 130.
"""
from __future__ import annotations

import argparse
import dataclasses
import shlex
import signal
import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional

from . import __version__, commands
from .documents import REPORT_FORMATS
from .demo_files import KINDS as DEMO_KINDS
from .recipes import COCO_COST
from .errors import UserError, debug
from .registry import DATASETS
from . import spec as spec_module
from .spec import DEFAULT_SHAPES_DATA, RECIPES, RunSpec, check_rates, flag, parse_ints, show_value

__all__ = ["build_parser", "main", "parse_ints", "add_spec_options"]

GROUP_TITLES = {"model": "model", "data": "data", "train": "recipe and training (explicit options win over the recipe's)",
                "run": "how it runs (does not change the result)"}
#: Other spellings kept for the grid's axes.
AXIS_ALIASES = {"loss": "--losses", "seed": "--seeds"}


def _scalar_type(f: dataclasses.Field):
    text = str(f.type)
    return int if "int" in text else float if "float" in text else str


def _on_off(text: str) -> bool:
    if text not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, got {text!r}")
    return text == "on"


def _parser_for(f: dataclasses.Field, grid_axis: bool):
    """The argparse ``type`` of one field: one value, or a comma-separated list on a grid axis."""
    meta = f.metadata
    if meta["kind"] == "ints":
        def one(text):
            if meta["none"] and text.strip().lower() == meta["none"]:
                return None
            return tuple(_cli_value(lambda: check_rates(parse_ints(text, flag(f.name)))))
    elif meta["kind"] == "onoff":
        one = _on_off
    else:
        kind = _scalar_type(f)

        def one(text, kind=kind):
            if meta["off"] and text.lower() in ("off", "none"):
                return None
            try:
                return kind(text)
            except ValueError:
                raise argparse.ArgumentTypeError(f"expected {kind.__name__}{' or off' if meta['off'] else ''}, "
                                                 f"got {text!r}") from None
    if not grid_axis:
        return one
    if meta["kind"] == "onoff":
        return lambda text: [True, False] if text == "both" else [_on_off(text)]
    sep = "/" if meta["kind"] == "ints" else ","  # a list of rate lists: 2,4,6/3,6,9
    return lambda text: [one(t.strip()) for t in text.split(sep) if t.strip()]


def _cli_value(make):
    try:
        return make()
    except UserError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_spec_options(parser: argparse.ArgumentParser, *, defaults: Optional[RunSpec] = None,
                     grid: bool = False) -> None:
    """One flag per :class:`RunSpec` field, grouped; ``defaults`` are what the help shows (the command's own).

    Flags not given stay out of the namespace (``argparse.SUPPRESS``), so
    :func:`~dlstudio_aspp.spec.given_values` returns only what the user set and the recipe
    fills the rest. With ``grid``, the axes (loss, aspp, seed) take comma-separated lists
    (``--aspp both``).
    """
    groups = {name: parser.add_argument_group(title) for name, title in GROUP_TITLES.items()}
    for f in dataclasses.fields(RunSpec):
        meta = f.metadata
        axis = grid and meta["axis"]
        shown = "the preset's" if defaults is None else show_value(f.name, getattr(defaults, f.name))
        if defaults is not None and not defaults.applies(f.name):
            shown += ", unused with these defaults"
        help_text = f"{spec_module.field_help(f.name)} (default: {shown})".replace("%", "%%")
        names = [flag(f.name)] + ([AXIS_ALIASES[f.name]] if axis and f.name in AXIS_ALIASES else [])
        kwargs: Dict[str, Any] = dict(dest=f.name, default=argparse.SUPPRESS, help=help_text)
        if meta["kind"] == "switch":
            kwargs["action"] = argparse.BooleanOptionalAction
        else:
            kwargs["type"] = _parser_for(f, axis)
            if meta["choices"]:
                kwargs["choices"] = spec_module.field_choices(f.name)
                kwargs.pop("type")
            if meta["kind"] == "onoff":
                kwargs["metavar"] = "{on,off,both}" if axis else "{on,off}"
            elif axis:
                kwargs["metavar"] = "A/B/..." if meta["kind"] == "ints" else "A,B,..."
            elif meta["metavar"]:
                kwargs["metavar"] = meta["metavar"]
        groups[meta["group"]].add_argument(*names, **kwargs)


# The parsers below are flat lists of add_parser/add_argument calls, one per sub-command, on
# purpose: each reads as that command's help. Their run options all come from
# add_spec_options; what repeats between parsers is only the shape of argparse calls.


def _run_parser(sub) -> None:
    p = sub.add_parser("run", help="the main job: fetch the real data, train one run and score it",
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Fetch PurdueShapes5MultiObject into the default folder (if missing), train mUNet+ASPP "
                                   "with the modern recipe and the dense output layer for one epoch, score it on the whole "
                                   "test set and write everything to --out. With --dataset coco: the coco recipe "
                                   f"(modern at depth {RECIPES['coco']['depth']} for {RECIPES['coco']['max_iters']} "
                                   f"iterations, keeping the last weights: {COCO_COST.short()} at 96x96; "
                                   "the run card gives the reason for each value), "
                                   "scored against the floors; --coco-root builds the set first. The defaults below are "
                                   "the Shapes run's.")
    p.add_argument("--out", default="outputs/run", help="the run's folder (default: outputs/run)")
    p.add_argument("--fetch", action="store_true", help="download the real data into --data when it is missing")
    p.add_argument("--dry-run", action="store_true", help="open the data, build the model and print the plan (images, "
                   "iterations, parameters, where it would write), then stop: nothing is written")
    p.add_argument("--config", default=None, metavar="CARD", help="replay a run: every option from a run card "
                   "(RUN/saved_model.json, or the RUN folder); options given beside it override single fields")
    p.add_argument("--resume", action="store_true", help="continue from the run's checkpoint (it must exist)")
    p.add_argument("--overwrite", action="store_true", help="start afresh in a folder that holds a run (its files are "
                                                             "moved to OUT/previous-<time>/ first)")
    _coco_build_options(p, run=True)
    add_spec_options(p, defaults=commands.run_spec_defaults())
    p.set_defaults(func="run")


def _experiments_parser(sub) -> None:
    from .experiments import PRESET_HELP, PRESETS

    p = sub.add_parser("experiments", help="run the grid: losses x ASPP on/off x seeds, resumable",
                       description="Every loss x ASPP setting x seed, one folder per run under OUT/runs. Finished runs "
                                   "are skipped; an interrupted run resumes from its checkpoint. Presets: "
                                   + "; ".join(f"{name} ({about})" for name, about in PRESET_HELP.items()) + ". Every run "
                                   "option overrides the preset; --loss, --aspp and --seed take lists, and so does any "
                                   "other axis (--lr 1e-3,3e-3; --rates 2,4,6/3,6,9), one run per value.")
    p.add_argument("out_pos", nargs="?", metavar="OUT", help="the grid's folder (the same as --out)")
    p.add_argument("--out", default=None, help="the grid's folder (default: outputs/experiments)")
    p.add_argument("--preset", default="quick", choices=list(PRESETS), help="(default: quick)")
    p.add_argument("--no-report", action="store_true", help="do not write report.md at the end")
    p.add_argument("--dry-run", action="store_true", help="check the settings, open the data and print the grid's "
                   "plan (its runs, the first run's images, iterations and model, where it would write), then stop: "
                   "nothing is written")
    p.add_argument("--executor", default="serial", choices=["serial", "ray"],
                   help="serial (one run after another) or ray (one Ray task per run) (default: serial)")
    p.add_argument("--address", default=None, help="ray: join a running cluster (auto or HOST:PORT) (default: a local Ray)")
    p.add_argument("--cpus-per-run", type=float, default=1, help="ray: CPUs per run, also its torch threads (default: 1)")
    p.add_argument("--gpus-per-run", type=float, default=None,
                   help="ray: GPUs per run, a fraction shares a card (default: 1 when the Ray cluster has a GPU and --cpu is off, "
                        "else 0)")
    _coco_build_options(p, run=True)
    add_spec_options(p, grid=True)
    p.set_defaults(func="experiments")


def _data_parsers(sub) -> None:
    p = sub.add_parser("fetch-shapes", help="download the real PurdueShapes5MultiObject files",
                       description="Put PurdueShapes5MultiObject-{10000-train,1000-test,20-train,20-test}.gz in DEST: "
                                   "from the DLStudio 1.0.9 sdist on PyPI (11 MB), else from the Purdue tarball (~400 MB); "
                                   "sha256-checked; fetched.json records which served each file.")
    p.add_argument("dest", nargs="?", default=DEFAULT_SHAPES_DATA, help=f"(default: {DEFAULT_SHAPES_DATA})")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the Purdue server (default: 10)")
    p.set_defaults(func="fetch_shapes")

    p = sub.add_parser("make-shapes", help="write a SYNTHETIC dataset in the PurdueShapes5MultiObject format",
                       description="Synthetic stand-in, same file format as the real data (labelled SYNTHETIC).")
    p.add_argument("dest", help="the folder to write")
    p.add_argument("--train", type=int, default=200, help="training images (default: 200)")
    p.add_argument("--test", type=int, default=40, help="test images (default: 40)")
    p.add_argument("--seed", type=int, default=0, help="(default: 0)")
    p.set_defaults(func="make_shapes")

    p = sub.add_parser("build-coco", help="build a 256x256 segmentation set from COCO",
                       description="Take COCO images with a non-crowd instance of a chosen class whose bbox is at least "
                                   "--min-size on both sides, build one mask channel per class with annToMask, resize to "
                                   "--size and store images, masks and index.json under --out. Re-runs skip finished images.")
    _coco_build_options(p, run=False)
    p.add_argument("--out", required=True, help="the set's folder")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func="build_coco")


def _coco_build_options(p, run: bool) -> None:
    """The builder's options, declared once for `build-coco` and for `run --dataset coco` (which builds
    the set first when --data holds none; its prefix says so, and its images default to COCO_RUN_SIZE)."""
    when = "with --coco-root: " if run else ""
    p.add_argument("--coco-root", nargs="+", required=not run, default=None, metavar="FOLDER",
                   help=f"{'with --dataset coco: build the set first (when --data holds none) from ' if run else ''}"
                        "one or more COCO folders, each with annotations/instances_{train,val}2017.json and "
                        "{train,val}2017/ (either split or both); categories are matched by name, and an image in two "
                        "folders is taken once")
    from .data.coco_options import BUILD_OPTIONS

    for o in BUILD_OPTIONS:
        if run and not o.run:
            continue
        shown = o.shown_default()
        if run and o.name == "size":  # run's own default: the size the coco recipe was measured at
            shown = f"{commands.COCO_RUN_SIZE}, where the coco recipe takes {COCO_COST.short()}; the coco preset's 256 on a GPU"
        p.add_argument(o.flag, type=o.type, nargs=o.nargs, metavar=o.metavar, default=None if run else o.default,
                       help=f"{when}{o.help} (default: {shown})")


def _sam_parser(sub) -> None:
    p = sub.add_parser("sam-compare", help="SAM masks next to mUNet's on a few test images, measured against ground truth",
                       description="Figure (one row per image: SAM overlay | mUNet overlay, ground-truth outlines) and "
                                   "metrics (IoU, boundary F1, completeness, FP/FN rates) as JSON and markdown. SAM masks "
                                   "come from a local checkpoint (--sam-checkpoint) or from files saved from the online demo "
                                   "(--sam-masks DIR: its cut-outs or screenshots, or masks; named <index>.png, "
                                   "<index>_<class>.png, or as the demo saved them); --export-demo first writes the images "
                                   "to upload and says what to save.")
    p.add_argument("--run", required=True, help="a run folder (saved_model + saved_model.json)")
    p.add_argument("--dataset", default=None, choices=list(DATASETS), help="(default: the run's, from its card)")
    p.add_argument("--data", default=None, help="data folder (default: the run's, from its card; for coco: the "
                                                "build-coco folder)")
    p.add_argument("--test-file", default=None, help="shapes: the test file in --data (default: the run's)")
    p.add_argument("--count", type=int, default=5, help="number of test images (default: 5)")
    p.add_argument("--indices", default=None, help="comma-separated test indices (instead of the first --count)")
    p.add_argument("--seed", type=int, default=None, help="pick --count images at random with this seed")
    p.add_argument("--sam-checkpoint", default=None, help="a SAM checkpoint you downloaded (never downloaded here)")
    p.add_argument("--sam-model", default="vit_b", choices=list(spec_module.SAM_MODELS), help="(default: vit_b; vit_t is MobileSAM)")
    p.add_argument("--sam-masks", default=None, help="folder of files saved from the SAM online demo: cut-outs (\"Cut out "
                   "object\"), screenshots of the image with its mask shown (PNG or JPEG), or whole-image masks; each "
                   "is matched to its exported image by its name's <index> or by its content")
    p.add_argument("--sam-kind", default="auto", choices=list(DEMO_KINDS),
                   help="read every --sam-masks file as this kind (default: auto, told apart by content)")
    p.add_argument("--export-demo", action="store_true", help="write the chosen test images as OUT/demo_images/<index>.png "
                   "to upload to the SAM online demo (enlarged to about --sam-size), with index.md naming each one's "
                   "source and saying what to save from the demo (cut-outs or screenshots) for --sam-masks")
    p.add_argument("--everything", action="store_true", help="add a SamAutomaticMaskGenerator column")
    p.add_argument("--show-input", action="store_true", help="add a column with the input image")
    p.add_argument("--tolerance", type=int, default=2, help="boundary F1 tolerance in pixels (default: 2)")
    p.add_argument("--sam-size", type=int, default=1024, help="small images are upscaled to about this size for SAM (default: 1024)")
    p.add_argument("--points-per-side", type=int, default=16, help="grid of the everything mode (default: 16)")
    p.add_argument("--out", default=None, help="output folder (default: <experiments>/sam or <run>/sam)")
    p.add_argument("--cpu", action="store_true", help="do not use a GPU even when there is one")
    p.set_defaults(func="sam_compare")


def _predict_parser(sub) -> None:
    p = sub.add_parser("predict", help="run a trained model on your own images",
                       description="Masks for your own pictures (any size; PNG, JPEG, grey or RGBA): per image an "
                                   "overlay PNG, one 0/255 mask PNG per class, and a line of predictions.jsonl with "
                                   "each class's pixel fraction; contact_sheet.png shows every overlay with the class "
                                   "colours. The run's card gives the image size, the input scaling and the thresholds; "
                                   "a warning says when the pictures are unlike the training images.")
    p.add_argument("run", help="a run folder (saved_model + saved_model.json)")
    p.add_argument("images", nargs="+", help="image files and/or folders of images")
    p.add_argument("--out", required=True, help="where the masks, overlays and predictions.jsonl go")
    p.add_argument("--batch-size", type=int, default=16, help="images per forward pass (default: 16)")
    p.add_argument("--cpu", action="store_true", help="do not use a GPU even when there is one")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func="predict")


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad value is the usage line, one line saying what is wrong, and where the help is
    (argparse's own prints the whole usage of a command with forty options first)."""

    def error(self, message: str):
        usage = f"usage: {self.prog} [options]" + (" ..." if self._subparsers is not None else "")
        self.exit(2, f"{usage}\n{self.prog}: error: {message}\nsee {self.prog} --help\n")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="dlstudio-aspp", description="ASPP at DLStudio's mUNet bottleneck: data, "
                                     "training, experiments, reports, COCO and SAM tools.")
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    _run_parser(sub)
    _data_parsers(sub)
    _experiments_parser(sub)
    _sam_parser(sub)
    _predict_parser(sub)
    p = sub.add_parser("report", help="a report of a run or an experiments folder: Markdown, HTML, PDF and a notebook",
                       description="For a run folder: its configuration, loss curve and components, per-class IoU/Dice "
                                   "with intervals, TP/FP/FN per class, the test grid, provenance and timings. For an "
                                   "experiments folder: loss curves (best/worst seed, overlay), ASPP on vs off with "
                                   "paired intervals, a qualitative grid, metrics and Dice-scale tables. Everything is "
                                   "read from the files on disk; the HTML embeds its figures (one file, offline), "
                                   "the PDF is A4, laid out by ReportLab (no browser, no LaTeX), and report.ipynb is "
                                   "the executed notebook to hand in: each table and figure under the code cell that "
                                   "made it and the homework's questions with room for the answers (its code also as "
                                   "report_notebook.py).")
    p.add_argument("run_dir", help="a run folder (`run --out`) or an experiments folder (`experiments --out`)")
    p.add_argument("--format", default=",".join(REPORT_FORMATS),
                   help=f"comma-separated: md, html, pdf, ipynb (default: {','.join(REPORT_FORMATS)}); with ipynb "
                        "the PDF is the executed notebook's, each code cell next to its output, with your answers")
    p.add_argument("--pdf-only", action="store_true",
                   help="only render report.ipynb as it is (edited, re-run in Jupyter) into report.pdf; runs nothing")
    p.set_defaults(func="report")
    p = sub.add_parser("handin", help="the whole homework in its order: one executed notebook, its PDF and code.zip",
                       description="Assembles the Shapes experiments folder, the COCO run or experiments folder and "
                                   "their SAM comparisons (each folder's sam/) into OUT/handin.ipynb (executed), "
                                   "handin.py, handin.pdf (each code cell right before its output), handin.html and "
                                   "code.zip (the .py files to submit), in the homework's order. A part not made yet "
                                   "is a section naming the command that makes it. Your answers in handin.ipynb are "
                                   "carried over each time it runs again; the previous notebook is kept as "
                                   "handin.previous.ipynb.")
    p.add_argument("--shapes", help="the Shapes experiments folder (`experiments --out`)")
    p.add_argument("--coco", help="the COCO run folder (`run --dataset coco --out`) or experiments folder")
    p.add_argument("--out", default="handin", help="the folder to write (default: handin)")
    p.add_argument("--pdf-only", action="store_true",
                   help="only render OUT/handin.ipynb as it is (edited, re-run in Jupyter) into handin.pdf and "
                        "handin.html; runs nothing")
    p.set_defaults(func="handin")
    p = sub.add_parser("compare", help="two runs on the same test images: their mIoU difference, paired per image",
                       description="RUN_A - RUN_B: the mIoU and per-class IoU differences of two runs scored on the "
                                   "same test images, with 95% intervals from a paired bootstrap over those images "
                                   "(both runs on the same resamples) and a verdict. A run scored before per-image "
                                   "counts were kept is scored again from its card.")
    p.add_argument("run_a", metavar="RUN_A", help="a run folder")
    p.add_argument("run_b", metavar="RUN_B", help="a run folder scored on the same test set")
    p.add_argument("--cpu", action="store_true", help="score on the CPU even when there is a GPU")
    p.add_argument("--json", default=None, metavar="FILE", help="also write the comparison as JSON")
    p.set_defaults(func="compare")
    _explain_parser(sub)
    return parser


def _explain_parser(sub) -> None:
    from .explain_report import DEFAULT_IMAGES

    p = sub.add_parser("explain", help="what the ASPP does in a trained run: receptive fields, branch by branch",
                       description="For a run folder (or every finished run of an experiments folder), on its first "
                                   "N test images: the effective receptive field of the centre and a corner pixel "
                                   "(the input gradient of that output pixel, its mean map and the radius holding 90% "
                                   "of it, with a 95% interval) beside the theoretical field of the architecture; with "
                                   "ASPP on, each branch (1x1, each rate, the image pool) switched off in turn, the "
                                   "mIoU and per-class IoU change with 95% paired bootstrap intervals, and the share "
                                   "of each branch's taps that read padding at the bottleneck. Writes RUN/explain/ "
                                   "(explain.json, figures, explain.md); `report` then shows them under 'What ASPP "
                                   "does'.")
    p.add_argument("run", metavar="RUN", help="a run folder (`run --out`) or an experiments folder (`experiments --out`)")
    p.add_argument("--images", type=int, default=DEFAULT_IMAGES, metavar="N",
                   help=f"test images to measure on (default: {DEFAULT_IMAGES}); more is more precise and slower")
    p.add_argument("--cpu", action="store_true", help="do not use a GPU even when there is one")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func="explain")


def _sigterm_as_interrupt(signum, frame):
    raise KeyboardInterrupt


_PACKAGE = Path(__file__).resolve().parent


def _warning_line(fallback):
    """A ``warnings.showwarning`` that prints the package's own warnings as one ``warning: ...`` line, as its
    errors are, each text once (the same check may run where a command plans and where it trains), and hands
    the others (and all of them under DLSTUDIO_ASPP_DEBUG) to ``fallback``."""
    printed = set()

    def show(message, category, filename, lineno, file=None, line=None) -> None:
        if debug() or not Path(filename).resolve().is_relative_to(_PACKAGE):
            fallback(message, category, filename, lineno, file, line)
        elif str(message) not in printed:
            printed.add(str(message))
            print(f"warning: {message}", file=file or sys.stderr)
    return show


def main(argv: Optional[List[str]] = None) -> int:
    with warnings.catch_warnings():
        warnings.showwarning = _warning_line(warnings.showwarning)
        return _main(argv)


def _main(argv: Optional[List[str]]) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.command_line = "dlstudio-aspp " + shlex.join(sys.argv[1:] if argv is None else argv)  # for run cards
    if not args.command:
        parser.print_help()
        return 0
    stops = [s for s in (signal.SIGTERM, getattr(signal, "SIGHUP", None)) if s is not None]
    previous = {s: signal.getsignal(s) for s in stops}
    try:  # a batch system's stop or a dropped SSH session: like Ctrl-C (training saves a checkpoint first)
        for s in stops:
            signal.signal(s, _sigterm_as_interrupt)
    except ValueError:  # not the main thread
        previous = {}
    try:
        return int(getattr(commands, args.func)(args) or 0)
    except UserError as exc:
        if debug():
            raise
        print(f"error: {exc}", file=sys.stderr)
        return getattr(exc, "exit_code", 2)
    except KeyboardInterrupt:
        print("interrupted; re-run the same command (with --resume for `run`) to continue", file=sys.stderr)
        return 130
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


if __name__ == "__main__":
    sys.exit(main())
