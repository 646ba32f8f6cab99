"""What each ``dlstudio-aspp`` sub-command does (the parsers live in :mod:`dlstudio_aspp.cli`).

Every command checks all of its settings before it writes anything, so a typo never
changes an existing folder.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from .errors import MissingFileError, UserError

DEFAULT_DATA = "./data/PurdueShapes5MultiObject/"
#: Iterations of the main job (``dlstudio-aspp run``): one epoch of the 10000 training
#: images at batch 4, about 11 minutes on 2 CPU cores.
RUN_ITERS = 2500


def parse_ints(text: Optional[str], option: str = "--rates") -> Optional[List[int]]:
    """'2,4,6' -> [2, 4, 6]; a one-line error naming ``option`` otherwise (an empty item included)."""
    if text is None:
        return None
    items = [t.strip() for t in str(text).split(",")]
    try:
        if not items or any(t == "" for t in items):
            raise ValueError
        return [int(t) for t in items]
    except ValueError:
        raise UserError(f"{option} must be comma-separated ints such as 2,4,6, got {text!r}") from None


def _positive(args, *names: str) -> None:
    for name in names:
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise UserError(f"--{name.replace('_', '-')} must be >= 1, got {v}")


def _dataroot(data: Optional[str], fetch: bool, train_file: str, test_file: str) -> str:
    """The data folder for `run` (ending in '/'); fetched when it is the default or --fetch says so."""
    from .data.sources import SHA256, fetch_shapes

    folder = data or DEFAULT_DATA
    folder = folder if folder.endswith("/") else folder + "/"
    path = Path(folder)
    if path.exists() and not path.is_dir():
        raise UserError(f"--data {data} is a file; give the folder that holds {train_file}")
    if all((path / f).is_file() for f in (train_file, test_file)):
        return folder
    if data is not None and not path.is_dir() and not fetch:
        raise MissingFileError(f"--data {data} does not exist; give an existing folder, or add --fetch to download "
                               "the real PurdueShapes5MultiObject files there")
    if train_file in SHA256 and test_file in SHA256:
        fetch_shapes(folder)
        return folder
    missing = [f for f in (train_file, test_file) if not (path / f).is_file()]
    raise MissingFileError(f"{', '.join(missing)} missing from {folder}; check --train-file/--test-file or run "
                           f"`dlstudio-aspp fetch-shapes {folder}`")


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
    from .training import STOCK_LR, recipe_options

    _positive(args, "epochs", "batch_size", "max_iters", "subset", "log_every", "depth")
    rates = parse_ints(args.rates)
    head = args.head or ("stock" if args.recipe == "stock" else "dense")
    opts = recipe_options(args.recipe, loss=args.loss, seed=args.seed, max_iters=args.max_iters, subset=args.subset,
                          log_every=args.log_every, progress=not args.no_progress, resume=args.resume, amp=args.amp,
                          normalize_masks=args.normalize_masks, optimizer=args.optimizer, schedule=args.schedule,
                          lr=args.lr, weight_decay=args.weight_decay, warmup=args.warmup, grad_clip=args.grad_clip,
                          checkpoint_every=args.checkpoint_every)
    opts.momentum = args.momentum
    opts.lr = opts.lr if opts.lr is not None else STOCK_LR
    opts.validate()
    from .losses import get_loss

    get_loss(opts.loss)
    out = Path(args.out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file; give a folder")
    if args.resume and not (out / "saved_model.ckpt").is_file():
        raise MissingFileError(f"--resume: there is no checkpoint at {out / 'saved_model.ckpt'}; run without --resume to start afresh")
    from .model import mUNetASPP

    import torch

    torch.manual_seed(args.seed)  # the same initial weights for the same --seed
    model = mUNetASPP(skip_connections=True, depth=args.depth, aspp=not args.no_aspp, aspp_rates=rates, head=head)
    data = _dataroot(args.data, args.fetch, args.train_file, args.test_file)
    from .data.sources import is_synthetic

    if is_synthetic(data):
        print(f"NOTE: {data} holds SYNTHETIC data (see SYNTHETIC.txt)")
    from .segmentation import SemanticSegmentationASPP

    from .dlstudio_glue import make_dlstudio

    dls = make_dlstudio(data, out, lr=opts.lr, momentum=args.momentum, epochs=args.epochs or 1,
                        batch_size=args.batch_size, cpu=args.cpu)
    seg = SemanticSegmentationASPP(dl_studio=dls, max_num_objects=5)
    train = seg.PurdueShapes5MultiObjectDataset(dl_studio=dls, segmenter=seg, train_or_test="train", dataset_file=args.train_file)
    test = seg.PurdueShapes5MultiObjectDataset(dl_studio=dls, segmenter=seg, train_or_test="test", dataset_file=args.test_file)
    seg.load_PurdueShapes5MultiObject_dataset(train, test, num_workers=args.workers)
    per_epoch = -(-len(train if args.subset is None else range(min(args.subset, len(train)))) // args.batch_size)
    epochs = args.epochs or -(-opts.max_iters // per_epoch)  # as many epochs as the iterations need
    dls.epochs = epochs
    print(seg.describe(model, dls.image_size))
    print(f"recipe {args.recipe}: " + ", ".join(f"{k}={v}" for k, v in opts.result_options().items() if v is not None))
    options = {k: v for k, v in opts.to_json().items() if k != "recipe"}
    options.update(loss=opts.loss, perf_file=str(out / "performance_numbers.txt"), epochs=epochs)
    seg.run_code_for_training_for_semantic_segmentation(model, recipe=args.recipe, **options)
    seg.run_code_for_testing_semantic_segmentation(model, progress=not args.no_progress)
    print(f"outputs in {out}/: saved_model, its .json card, .history.json/.csv, .metrics.json, .test_grid.png")
    return 0


def experiments(args) -> int:
    from .experiments import GridConfig, grid_outcome, run_grid
    from .report import make_report

    _positive(args, "epochs", "batch_size", "max_iters", "depth", "train_subset", "test_subset", "log_every")
    overrides = dict(dataset=args.dataset, data=args.data, train_file=args.train_file, test_file=args.test_file,
                     losses=args.losses.split(",") if args.losses else None,
                     aspp={"both": [True, False], "on": [True], "off": [False]}.get(args.aspp),
                     rates=parse_ints(args.rates, "--rates"), seeds=parse_ints(args.seeds, "--seeds"),
                     recipe=args.recipe, head=args.head, epochs=args.epochs, max_iters=args.max_iters,
                     batch_size=args.batch_size, lr=args.lr, momentum=args.momentum, depth=args.depth,
                     train_subset=args.train_subset, test_subset=args.test_subset, log_every=args.log_every,
                     normalize_masks=args.normalize_masks, amp=args.amp, cpu=args.cpu,
                     progress=False if args.no_progress else None)
    if args.dataset == "coco" and not args.data:
        raise UserError("--dataset coco needs --data: the folder written by `dlstudio-aspp build-coco`")
    cfg = GridConfig.from_preset(args.preset, **overrides)
    cfg.validate()
    if cfg.dataset == "shapes" and args.data is None:
        _dataroot(None, True, cfg.train_file, cfg.test_file)
    if args.executor == "ray":
        from .ray_executor import run_grid_ray

        gpus = args.gpus_per_run
        if gpus is None:
            import torch

            gpus = 1.0 if torch.cuda.is_available() and not cfg.cpu else 0.0
        run_grid_ray(cfg, args.out, address=args.address, cpus_per_run=args.cpus_per_run, gpus_per_run=gpus)
    else:
        if args.address or args.gpus_per_run is not None:
            raise UserError("--address and --gpus-per-run need --executor ray")
        run_grid(cfg, args.out)
    print(grid_outcome(cfg, args.out))
    if not args.no_report:
        print(f"report: {make_report(args.out)}")
    return 0


def report(args) -> int:
    from .report import make_report

    print(f"report: {make_report(args.run_dir)}")
    return 0


def build_coco(args) -> int:
    from .data.coco import build_coco as build

    build(args.coco_root, args.out, classes=args.classes, min_size=args.min_size, size=args.size,
          max_per_class=args.max_per_class, max_per_split=args.max_per_split, seed=args.seed,
          splits=[s.strip() for s in args.splits.split(",") if s.strip()], progress=not args.no_progress)
    print(f"COCO set ready in {args.out} (index.json)")
    return 0


def open_test_set(dataset: str, data: Optional[str], test_file: str, image_size):
    """The test split of PurdueShapes (``data`` + ``test_file``) or of a built COCO set (``data``)."""
    if dataset == "coco":
        if not data:
            raise UserError("--dataset coco needs --data: the folder written by `dlstudio-aspp build-coco`")
        from .data.coco import COCOSegmentationDataset

        return COCOSegmentationDataset(train_or_test="test", root=data, image_size=image_size)
    from .data.shapes import PurdueShapes5MultiObjectDataset

    return PurdueShapes5MultiObjectDataset(train_or_test="test", dataset_file=test_file, root=data or DEFAULT_DATA,
                                           image_size=image_size)


def sam_compare(args) -> int:
    from .card import RunCard
    from .sam_compare import compare

    run = Path(args.run)
    card = RunCard.load(run)
    out = Path(args.out) if args.out else (run.parent.parent / "sam" if (run.parent.parent / "grid.json").is_file() else run / "sam")
    import torch

    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    dataset = open_test_set(args.dataset, args.data, args.test_file, card.image_size)
    result = compare(run, dataset, out, dataset_name=args.dataset, count=args.count,
                     indices=parse_ints(args.indices, "--indices"), seed=args.seed, sam_model=args.sam_model,
                     sam_checkpoint=args.sam_checkpoint, sam_masks=args.sam_masks, everything=args.everything,
                     show_input=args.show_input, tolerance=args.tolerance, sam_size=args.sam_size,
                     points_per_side=args.points_per_side, device=device)
    print((out / f"sam_{args.dataset}_metrics.md").read_text())
    print(f"figure: {result['figure']}")
    return 0
