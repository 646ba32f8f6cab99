"""What each ``dlstudio-aspp`` sub-command does (the parsers live in :mod:`dlstudio_aspp.cli`)."""
from __future__ import annotations

import json
from pathlib import Path

from .cli import DEFAULT_DATA


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


def make_dlstudio(data: str, out: Path, args, image_size=(64, 64), classes=None):
    """A DLStudio instance for a run folder, from the common training arguments."""
    from .dlstudio_glue import load_dlstudio

    DLStudio = load_dlstudio()
    if not data.endswith("/"):
        data += "/"
    out.mkdir(parents=True, exist_ok=True)
    return DLStudio(dataroot=data, image_size=list(image_size), path_saved_model=str(out / "saved_model"),
                    momentum=args.momentum, learning_rate=args.lr, epochs=args.epochs, batch_size=args.batch_size,
                    classes=tuple(classes or ("rectangle", "triangle", "disk", "oval", "star")),
                    use_gpu=not args.cpu)


def train_options(args) -> dict:
    return dict(seed=args.seed, max_iters=args.max_iters, subset=args.subset, log_every=args.log_every,
                progress=not args.no_progress, resume=args.resume, amp=args.amp, normalize_masks=args.normalize_masks)


def run(args) -> int:
    from .cli import parse_rates
    from .data.sources import SHA256, fetch_shapes as fetch, is_synthetic

    data = args.data if args.data.endswith("/") else args.data + "/"
    if args.train_file in SHA256 and not all((Path(data) / f).is_file() for f in (args.train_file, args.test_file)):
        fetch(data)
    if is_synthetic(data):
        print(f"NOTE: {data} holds SYNTHETIC data (see SYNTHETIC.txt)")
    from .segmentation import SemanticSegmentationASPP

    out = Path(args.out)
    dls = make_dlstudio(data, out, args)
    seg = SemanticSegmentationASPP(dl_studio=dls, max_num_objects=5)
    train = seg.PurdueShapes5MultiObjectDataset(dl_studio=dls, segmenter=seg, train_or_test="train", dataset_file=args.train_file)
    test = seg.PurdueShapes5MultiObjectDataset(dl_studio=dls, segmenter=seg, train_or_test="test", dataset_file=args.test_file)
    seg.load_PurdueShapes5MultiObject_dataset(train, test)
    import torch

    torch.manual_seed(args.seed)  # the same initial weights for the same --seed
    model = seg.mUNetASPP(skip_connections=True, depth=args.depth, aspp=not args.no_aspp, aspp_rates=parse_rates(args.rates))
    print(seg.describe(model, dls.image_size))
    seg.run_code_for_training_for_semantic_segmentation(model, loss=args.loss, perf_file=str(out / "performance_numbers.txt"),
                                                        **train_options(args))
    seg.run_code_for_testing_semantic_segmentation(model, progress=not args.no_progress)
    print(f"outputs in {out}/: saved_model, its .history.json/.csv, .metrics.json, .test_grid.png")
    return 0


def _ints(text, option):
    from .cli import parse_rates

    return parse_rates(text, option) if text is not None else None


def experiments(args) -> int:
    from .experiments import GridConfig, run_grid
    from .report import make_report

    overrides = dict(dataset=args.dataset, data=args.data, train_file=args.train_file, test_file=args.test_file,
                     losses=args.losses.split(",") if args.losses else None,
                     aspp={"both": [True, False], "on": [True], "off": [False]}.get(args.aspp),
                     rates=_ints(args.rates, "--rates"), seeds=_ints(args.seeds, "--seeds"), epochs=args.epochs, max_iters=args.max_iters,
                     batch_size=args.batch_size, lr=args.lr, momentum=args.momentum, depth=args.depth,
                     train_subset=args.train_subset, test_subset=args.test_subset, log_every=args.log_every,
                     normalize_masks=args.normalize_masks, amp=args.amp, cpu=args.cpu,
                     progress=False if args.no_progress else None)
    if args.dataset == "coco" and not args.data:
        raise ValueError("--dataset coco needs --data: the folder written by `dlstudio-aspp build-coco`")
    cfg = GridConfig.from_preset(args.preset, **overrides)
    if cfg.dataset == "shapes" and args.data is None:
        from .data.sources import SHA256, fetch_shapes as fetch

        if cfg.train_file in SHA256 and not (Path(cfg.data) / cfg.train_file).is_file():
            fetch(cfg.data)
    folders = run_grid(cfg, args.out)
    print(f"{len(folders)} runs in {args.out}/runs")
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


def sam_compare(args) -> int:
    from .sam_compare import compare

    run = Path(args.run)
    out = Path(args.out) if args.out else (run.parent.parent / "sam" if (run.parent.parent / "grid.json").is_file() else run / "sam")
    import torch

    device = "cuda" if torch.cuda.is_available() and not args.cpu else "cpu"
    card = json.loads((run / "saved_model.json").read_text()) if (run / "saved_model.json").is_file() else {}
    data = args.data or ("" if args.dataset == "coco" else DEFAULT_DATA)
    if not data:
        raise ValueError("--dataset coco needs --data: the folder written by `dlstudio-aspp build-coco`")

    class _Dls:  # the two DLStudio attributes the datasets read
        image_size = list(card.get("image_size", [64, 64]))
        dataroot = data if data.endswith("/") else data + "/"

    if args.dataset == "coco":
        from .data.coco import COCOSegmentationDataset

        dataset = COCOSegmentationDataset(_Dls(), None, "test", root=data)
    else:
        from .data.shapes import PurdueShapes5MultiObjectDataset

        dataset = PurdueShapes5MultiObjectDataset(_Dls(), None, "test", args.test_file)
    indices = _ints(args.indices, "--indices")
    result = compare(run, dataset, out, dataset_name=args.dataset, count=args.count, indices=indices, seed=args.seed,
                     sam_model=args.sam_model, sam_checkpoint=args.sam_checkpoint, sam_masks=args.sam_masks,
                     everything=args.everything, show_input=args.show_input, tolerance=args.tolerance,
                     sam_size=args.sam_size, points_per_side=args.points_per_side, device=device)
    print((out / f"sam_{args.dataset}_metrics.md").read_text())
    print(f"figure: {result['figure']}")
    return 0
