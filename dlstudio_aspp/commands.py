"""What each ``dlstudio-aspp`` sub-command does (the parsers live in :mod:`dlstudio_aspp.cli`).

Every command checks all of its settings before it writes anything, so a typo never
changes an existing folder.
"""
from __future__ import annotations

import dataclasses
import sys
from pathlib import Path
import time
from typing import Optional

from .documents import REPORT_FORMATS
from .errors import MissingFileError, UnfinishedError, UserError
from .locks import FolderLock
from .spec import RunSpec, given_values, parse_ints

#: What `run` sets before the recipe (each dataset kind's ``run_recipe``): a seed, so that a run is reproducible.
RUN_BASE = {"seed": 0}
#: The side of the set `run --dataset coco --coco-root` builds: the size the coco recipe's iteration budget and
#: depth were chosen at (the time-to-accuracy front in benchmarks/RESULTS.md; its cost: recipes.COCO_COST).
COCO_RUN_SIZE = 96


def run_spec_defaults(dataset: str = "shapes") -> RunSpec:
    """The spec `run` uses for ``dataset`` when no other option is given (shapes' is shown in its --help)."""
    return run_spec({"dataset": dataset})


def run_spec(given: dict, config: Optional[str] = None) -> RunSpec:
    """`run`'s spec: its defaults for the dataset given, then the recipe and options given; validated.

    With ``config`` (a run card, or its run folder) the card's spec replaces the defaults: the run
    is replayed exactly, except for the options given (a recipe given is layered over the card's spec)."""
    if config is not None:
        recorded = card_spec(config)
        recipe = given.pop("recipe", None)
        if recipe is not None:
            return RunSpec.build(recipe, base=recorded, **given).validate()
        return RunSpec.from_json(dict(recorded, **given)).validate()
    from .registry import DATASETS

    recipe = given.pop("recipe", None) or DATASETS[given.get("dataset", "shapes")].run_recipe
    return RunSpec.build(recipe, base=RUN_BASE, **given).validate()


def card_spec(config: str) -> dict:
    """The spec a run card records (``config``: the card's file, or the run folder holding it)."""
    import json

    from .card import data_spec
    from .run_files import RunFiles

    path = Path(config)
    path = RunFiles.at(path).file if path.is_dir() else path
    if not path.is_file():
        raise MissingFileError(f"--config {config}: no run card there; give RUN/saved_model.json or the RUN folder")
    try:
        card = json.loads(path.read_text())
        spec = card.get("spec")
    except (json.JSONDecodeError, UnicodeDecodeError, AttributeError):
        spec = None
    if not isinstance(spec, dict):
        raise UserError(f"--config {config} is not a run card with a spec (a saved_model.json written by run, "
                        "experiments or the segmenter)")
    return data_spec(spec, card.get("provenance"))


def fetch_shapes(args) -> int:
    from .data.sources import fetch_shapes as fetch

    got = fetch(args.dest, timeout=args.timeout)
    sources = sorted(set(got.values()))
    print(f"PurdueShapes5MultiObject ready in {args.dest} (source: {', '.join(sources)})")
    return 0


def make_shapes(args) -> int:
    from .data.sources import SYNTHETIC_NOTE, make_shapes as make

    paths = make(args.dest, train=args.train, test=args.test, seed=args.seed)
    print(f"{SYNTHETIC_NOTE}:")
    for p in paths.values():
        print(f"  {p}")
    return 0


def run(args) -> int:
    from .data.open import dataroot
    from .run_files import RunFiles

    spec = run_spec(given_values(args), args.config)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder")
    if args.resume and args.overwrite:
        raise UserError("--resume continues the run in --out and --overwrite starts it afresh; give one of them")
    layout = RunFiles.at(out)
    if args.resume and not layout.checkpoint.is_file():
        raise MissingFileError(f"--resume: there is no checkpoint at {layout.checkpoint}; run without --resume to start afresh")
    spec = _coco_set(spec, args)
    if spec is None:  # a dry run that would build the COCO set first
        return 0
    spec = spec.replace(data=dataroot(spec, fetch=args.fetch))
    if args.dry_run:  # no lock, no restart: nothing is written
        return _run_locked(spec, out, layout, args)
    with FolderLock(out, "dlstudio-aspp run"):
        _check_restart(layout, args)
        return _run_locked(spec, out, layout, args)


def _coco_set(spec: RunSpec, args, size: Optional[int] = None) -> Optional[RunSpec]:
    """``run`` or ``experiments --dataset coco --coco-root ROOT...``: build the set into --data (default
    data/coco_<classes>_<size>...) when it holds none, with the builder's options given; a set built
    there before must have the same settings. The spec then points at it. The side is --size, else
    ``size`` (a preset's), else :data:`COCO_RUN_SIZE`."""
    if args.coco_root is None and args.classes is None:
        return spec
    from .registry import DATASETS

    if not DATASETS[spec.dataset].from_coco:
        kinds = [name for name, kind in DATASETS.items() if kind.from_coco]
        raise UserError(f"--coco-root and --classes go with --dataset {' or '.join(kinds)}")
    if args.coco_root is None:
        raise UserError("--classes needs --coco-root: the COCO folder to build the set from")
    from .data.coco import INDEX
    from .data.coco_build import build_coco as build, build_settings, check_settings, default_coco_folder
    from .data.coco_options import build_options

    options = build_options(dict(_build_values(args, run=True), size=args.size or size or COCO_RUN_SIZE))
    data = Path(spec.data or default_coco_folder(args.coco_root, **options))
    if (data / INDEX).is_file():  # built before: it must be the same build
        check_settings(data, build_settings(args.coco_root, **options), "--data")
    elif args.dry_run:
        print(f"dry run: would build the COCO set for {', '.join(options['classes'])} in {data} first, then plan the "
              "run on it; nothing was written")
        return None
    else:
        print(f"building the COCO set for {', '.join(options['classes'])} in {data}")
        with FolderLock(data, "dlstudio-aspp run (build-coco)"):
            build(args.coco_root, data, progress=spec.progress, out_flag="--data", **options)
    return spec.replace(data=str(data))


def _build_values(args, run: bool) -> dict:
    """The COCO builder's options on the command line (None: not given); ``run`` and ``experiments`` have
    those marked ``run`` (their --seed is the training seed, not the builder's)."""
    from .data.coco_options import BUILD_OPTIONS

    return {o.name: getattr(args, o.name) for o in BUILD_OPTIONS if o.run or not run}


def _check_restart(layout, args) -> None:
    """Refuse to start afresh over a run unless --overwrite, which moves its files aside first."""
    old = layout.own_files()
    if not old or args.resume:
        return
    if not args.overwrite:
        if layout.summary_file.is_file() and layout.weights.is_file():  # a finished run keeps its .ckpt too
            raise UserError(f"{layout.folder} holds a finished run; --overwrite starts it afresh (its files are moved "
                            f"aside), another --out keeps it; to train the same setup longer: dlstudio-aspp run "
                            f"--config {layout.file} --out NEW --max-iters N (or --epochs N)")
        what = "an interrupted run (a checkpoint)" if layout.checkpoint.is_file() else "the files of a run"
        raise UserError(f"{layout.folder} holds {what}; add --resume to continue it, --overwrite to start afresh "
                        "(its files are moved aside), or choose another --out")
    aside = layout.folder / time.strftime("previous-%Y%m%d-%H%M%S")
    aside.mkdir()
    for path in old:
        path.rename(aside / path.name)
    print(f"--overwrite: moved {len(old)} files of the previous run to {aside}")


def _run_locked(spec: RunSpec, out: Path, layout, args) -> int:
    from .data.open import is_synthetic, open_datasets
    from .runner import execute, plan_run

    if is_synthetic(spec):
        print(f"NOTE: {spec.data} holds SYNTHETIC data (see SYNTHETIC.txt)")
    t0 = time.perf_counter()
    data = open_datasets(spec)
    plan = plan_run(spec, out, data=data, resume=args.resume, load_seconds=time.perf_counter() - t0)
    print(plan.describe())
    if args.dry_run:
        print(f"dry run: would train on {len(plan.split[0])} images of {spec.data} and score {len(plan.test_set)} "
              f"test images, writing {out}/; nothing was written")
        return 0
    summary = execute(plan, args.command_line)
    print(f"test mIoU {summary['miou']:.3f} after {summary['iterations']} iterations; outputs in {out}/: "
          f"{', '.join(p.name for p in layout.own_files())}")
    from .registry import DATASETS

    after = DATASETS[spec.dataset].after_run
    if after:
        print(after.format(iterations=summary["iterations"]))
    return 0


def experiments(args) -> int:
    from .experiments import GridConfig, grid_outcome, grid_unfinished, run_grid

    out = _grid_out(args)
    given = given_values(args)
    axes = dict(losses=given.pop("loss", None), aspp=given.pop("aspp", None), seeds=given.pop("seed", None))
    extra = {}
    for name in [k for k, v in given.items() if isinstance(v, list)]:  # the other axes: one value is no axis
        values = given.pop(name)
        if len(values) > 1:
            extra[name] = values
        elif values:
            given[name] = values[0]
    cfg = GridConfig.from_preset(args.preset, **axes, extra=extra, **given).validate()
    if args.executor != "ray" and (args.address or args.gpus_per_run is not None):
        raise UserError("--address and --gpus-per-run need --executor ray")
    coco_spec = _coco_set(cfg.spec, args, cfg.size)  # --coco-root: the set is built first
    if coco_spec is None:  # a dry run that would build the COCO set first
        return 0
    cfg = dataclasses.replace(cfg, spec=coco_spec)
    if args.dry_run:
        from .experiments import plan_grid

        plan = plan_grid(cfg, out)
        print(plan.describe())
        print(f"dry run: would write {out}/ (grid.json, runs/, the report); nothing was written")
        return 0
    with FolderLock(out, "dlstudio-aspp experiments"):
        if args.executor == "ray":
            from .ray_executor import run_grid_ray

            run_grid_ray(cfg, out, address=args.address, cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run)
        else:
            run_grid(cfg, out)
    print(grid_outcome(cfg, out))
    if not args.no_report:
        written = write_report(Path(out), REPORT_FORMATS)
        print("report: " + ", ".join(str(p) for k, p in written.items() if k in REPORT_FORMATS))
    unfinished = grid_unfinished(cfg, out)
    if unfinished:  # a batch script or a scheduler must see that the grid is incomplete
        print(f"error: {len(unfinished)} of {len(cfg.cells())} runs did not finish: {', '.join(unfinished)} (see "
              f"grid.json's 'failed'); change what made them fail and run the same command again", file=sys.stderr)
        return 1
    return 0


def _grid_out(args) -> str:
    if args.out_pos and args.out and Path(args.out_pos) != Path(args.out):
        raise UserError(f"two grid folders given ({args.out_pos} and --out {args.out}); give one")
    return args.out_pos or args.out or "outputs/experiments"


def predict(args) -> int:
    from .accel import pick_device

    from .inference import predict_files

    from .spec import MAX_BATCH

    if not 1 <= args.batch_size <= MAX_BATCH:
        raise UserError(f"--batch-size must be from 1 to {MAX_BATCH}, got {args.batch_size}")
    device = pick_device(args.cpu).type
    path = predict_files(args.run, args.images, args.out, batch_size=args.batch_size, device=device,
                         progress=not args.no_progress)
    print(f"masks and overlays in {args.out}/; per-image class fractions in {path}")
    return 0


def _report_folder(folder: Path) -> str:
    """'grid' or 'run': what ``folder`` holds, or one line naming what it is not (and the folders inside it)."""
    from .grid import GridFolder
    from .run_files import RunFiles

    if GridFolder(folder).exists():
        return "grid"
    if RunFiles.at(folder).has_card():
        return "run"
    inside = sorted(p for p in folder.glob("*") if p.is_dir() and (GridFolder(p).exists() or RunFiles.at(p).has_card()))
    if inside:
        listed = ", ".join(p.name for p in inside[:20]) + (f" and {len(inside) - 20} more" if len(inside) > 20 else "")
        raise UserError(f"{folder} holds {len(inside)} run or experiments folders ({listed}), not one; report one "
                        f"of them: dlstudio-aspp report {inside[0]}")
    raise MissingFileError(f"{folder} is neither an experiments folder (grid.json) nor a run folder "
                           "(saved_model.json); give the folder `run --out` or `experiments --out` wrote")


def write_report(folder: Path, formats) -> dict:
    """The report of a run or experiments folder in ``formats`` (md, html, pdf, ipynb); return {kind: path}.

    With ipynb, the notebook is executed first (a failing cell writes nothing) and the PDF is the
    notebook's, each code cell next to its output and the student's answers in place."""
    from .documents import write_document
    from .report import make_report
    from .run_report import make_run_report

    md = (make_report if _report_folder(folder) == "grid" else make_run_report)(folder)
    written = {}
    if "ipynb" in formats:
        from .notebook import NOTEBOOK, make_notebook
        from .notebook_document import render_notebook

        written.update(make_notebook(folder))
        if "pdf" in formats:
            written.update(render_notebook(folder / NOTEBOOK, ["pdf"]))
    written.update(write_document(md, ["md", *(f for f in formats if f != "pdf" or "ipynb" not in formats)]))
    return written


def report(args) -> int:
    formats = [f.strip() for f in args.format.split(",") if f.strip()]
    bad = [f for f in formats if f not in REPORT_FORMATS]
    if bad or not formats:
        raise UserError(f"--format takes {', '.join(REPORT_FORMATS)} (comma-separated), got {args.format!r}")
    folder = Path(args.run_dir)
    if args.pdf_only:
        from .notebook import NOTEBOOK
        from .notebook_document import render_notebook

        _report_folder(folder)
        written = render_notebook(folder / NOTEBOOK, ["pdf"])
    else:
        written = write_report(folder, formats)
    for kind, path in written.items():
        if kind in formats or kind in ("py", "previous"):
            print(f"{kind}: {path}")
    return 0


def handin(args) -> int:
    from .handin import NOTEBOOK, make_handin
    from .notebook_document import render_notebook

    out = Path(args.out)
    with FolderLock(out, "dlstudio-aspp handin"):
        if args.pdf_only:
            written = render_notebook(out / NOTEBOOK)
        else:
            written = make_handin(args.shapes, args.coco, out)
    for kind, path in written.items():
        print(f"{kind}: {path}")
    print(f"hand in {out / 'handin.pdf'} and {out / 'code.zip'}")
    return 0


def build_coco(args) -> int:
    from .data.coco_build import build_coco as build

    with FolderLock(args.out, "dlstudio-aspp build-coco"):
        build(args.coco_root, args.out, progress=not args.no_progress, **_build_values(args, run=False))
    print(f"COCO set ready in {args.out} (index.json)")
    return 0


def sam_compare(args) -> int:
    from .card import RunCard
    from .sam_compare import compare

    from .data.open import dataroot, open_split
    from .grid import GridFolder

    run = Path(args.run)
    card = RunCard.load(run)
    grid = GridFolder.of_run(run)
    out = Path(args.out) if args.out else (grid.sam_dir if grid is not None else run / "sam")
    from .accel import pick_device

    device = pick_device(args.cpu).type
    spec = RunSpec.from_json(card.data_spec())  # the run's own dataset and data folder, unless given
    spec = spec.replace(**{k: v for k, v in (("dataset", args.dataset), ("data", args.data)) if v is not None})
    if args.test_file:
        spec = spec.replace(test_file=args.test_file)
    dataset = open_split(spec, "test", dataroot(spec), card.image_size)
    if args.export_demo:
        return _export_demo(args, run, dataset, out, spec.dataset)
    result = compare(run, dataset, out, dataset_name=spec.dataset, count=args.count,
                     indices=parse_ints(args.indices, "--indices"), seed=args.seed, sam_model=args.sam_model,
                     sam_checkpoint=args.sam_checkpoint, sam_masks=args.sam_masks, everything=args.everything,
                     show_input=args.show_input, tolerance=args.tolerance, sam_size=args.sam_size,
                     points_per_side=args.points_per_side, device=device, sam_kind=args.sam_kind)
    print((out / f"sam_{spec.dataset}_metrics.md").read_text())
    print(f"figure: {out / result['figure']}")
    if "files_figure" in result:
        print(f"how each saved file was read: {out / result['files_figure']}")
    if result.get("problems"):
        raise UnfinishedError("\n".join(result["problems"]))
    return 0


def _export_demo(args, run: Path, dataset, out: Path, dataset_name: str) -> int:
    """``sam-compare --export-demo``: the chosen test images as files to upload, and what to do next."""
    from .registry import DATASETS
    from .sam_compare import DEMO_STEPS, export_demo, pick_indices

    indices = pick_indices(len(dataset), args.count, parse_ints(args.indices, "--indices"), args.seed)
    folder = export_demo(dataset, out / "demo_images", indices, args.sam_size)
    print((folder / "index.md").read_text())
    masks = out / "demo_masks"
    side = dataset[indices[0]]["image"].shape[-1]
    original = DATASETS[dataset_name].demo_note
    print(f"{len(indices)} images in {folder}/, enlarged from {side} px to about {args.sam_size} px (as SAM gets them "
          f"here).{original}\n{DEMO_STEPS}\nSave them in {masks}/, then:\n"
          f"  dlstudio-aspp sam-compare --run {run}" + (f" --data {args.data}" if args.data else "")
          + (f" --sam-size {args.sam_size}" if args.sam_size != 1024 else "")
          + f" --indices {','.join(map(str, indices))} --sam-masks {masks}")
    return 0


def compare(args) -> int:
    from .accel import pick_device

    from .atomic import write_json
    from .compare import compare_markdown, compare_runs

    device = pick_device(args.cpu).type
    result = compare_runs(args.run_a, args.run_b, device=device)
    print(compare_markdown(result))
    if args.json:
        write_json(args.json, result)
    return 0


def explain(args) -> int:
    from .accel import pick_device
    from .card import RunCard
    from .explain import explain_grid, explain_run
    from .explain_report import explain_summary, read_explained
    from .grid import GridFolder

    if args.images < 1:
        raise UserError(f"--images takes a positive number of test images, got {args.images}")
    folder, device = Path(args.run), pick_device(args.cpu).type
    if GridFolder(folder).exists():
        with FolderLock(folder, "dlstudio-aspp explain"):
            runs = explain_grid(folder, args.images, device, progress=not args.no_progress)
    else:
        RunCard.load(folder)  # one line when it is not a run folder
        with FolderLock(folder, "dlstudio-aspp explain"):
            explain_run(folder, args.images, device, progress=not args.no_progress)
        runs = [folder]
    for run in runs:
        print(explain_summary(run, read_explained(run)))
    print(f"`dlstudio-aspp report {folder}` shows them under 'What ASPP does'")
    return 0
