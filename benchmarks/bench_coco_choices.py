"""COCO choices, each measured against a base configuration, paired seed by seed.

Usage:
    python benchmarks/bench_coco_choices.py --data SET --out DIR [--iters 300] [--seeds 0 1 2]
        [--only NAME ...]

Trains every configuration below with ``dlstudio-aspp run --dataset coco`` at the same
budget and seeds, without a validation split unless the configuration is one (seed-major order, so an interrupted sweep still holds whole pairs),
skips runs whose ``summary.json`` is already there, then prints one row per choice: the
test person IoU of each configuration (mean over seeds) and the seed-paired difference
against ``base`` with its 95% t interval and verdict (``dlstudio_aspp.stats``). Runs of
one seed share initial weights and data order, so the pairs isolate the choice.
"""
import argparse
import json
import subprocess
import sys
from pathlib import Path

from dlstudio_aspp.stats import paired_interval

#: Every run: train on all the training images (no validation split, no best-checkpoint choice), so
#: that each pair differs only in its choice.
COMMON = ["--val-split", "off"]
#: name -> its flags. Every run gets base's flags first and its own after (the later flag wins), so a
#: configuration differs from base in its own flags only, whatever ``run --dataset coco``'s defaults
#: become (now: standard augmentation, dataset normalisation, lr 1e-3). base spells out the rates it
#: was measured with: DeepLab's 6,12,18 scaled to a 16x16 bottleneck (--rates auto now gives 2,4,6 there).
CONFIGS = {
    "base": ["--rates", "3,6,9"],
    "rates 2/4/6": ["--rates", "2,4,6"],
    "augment none": ["--augment", "none"],
    "augment light": ["--augment", "light"],
    "normalize none": ["--normalize", "none"],
    "lr 3e-3": ["--lr", "0.003"],
    # the coco recipe's held-out tenth: fewer training images, the best of 5 checkpoints kept
    "val-split 0.1": ["--val-split", "0.1", "--val-every", "50"],
}


def run_one(data: str, folder: Path, seed: int, iters: int, flags) -> dict:
    summary = folder / "summary.json"
    if not summary.is_file():
        folder.parent.mkdir(parents=True, exist_ok=True)
        cmd = ["dlstudio-aspp", "run", "--dataset", "coco", "--data", data, "--max-iters", str(iters),
               "--seed", str(seed), "--out", str(folder), "--no-progress", *COMMON, *CONFIGS["base"], *flags]
        if folder.exists():
            cmd.append("--overwrite")
        with open(folder.parent / f"{folder.name}.log", "w") as log:
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, check=True)
    return json.loads(summary.read_text())


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", required=True, help="a built COCO set (build-coco)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--iters", type=int, default=300)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--only", nargs="+", choices=sorted(CONFIGS), help="configurations to run (base is always run)")
    args = ap.parse_args()
    names = ["base"] + [n for n in CONFIGS if n != "base" and (not args.only or n in args.only)]
    out = Path(args.out)
    iou = {n: {} for n in names}
    for seed in args.seeds:
        for name in names:
            folder = out / name.replace(" ", "_").replace("/", "-") / f"seed{seed}"
            iou[name][seed] = run_one(args.data, folder, seed, args.iters, CONFIGS[name])["miou"]
    print(f"\n{args.data}: {args.iters} iterations, seeds {args.seeds}; test person IoU, mean over seeds\n")
    print("| configuration | flags | IoU per seed | mean | paired diff vs base [95% t interval] | verdict |")
    print("|---|---|---|---|---|---|")
    for name in names:
        per = [iou[name][s] for s in args.seeds]
        row = f"| {name} | `{' '.join(CONFIGS[name]) or '(defaults)'}` | {', '.join(f'{v:.3f}' for v in per)} | {sum(per) / len(per):.3f} |"
        if name == "base":
            print(row + " | |")
            continue
        p = paired_interval([iou[name][s] - iou["base"][s] for s in args.seeds])
        print(row + f" {p['mean']:+.3f} [{p['low']:+.3f}, {p['high']:+.3f}] | {p['verdict']} |")
    (out / "results.json").write_text(json.dumps({"iters": args.iters, "seeds": args.seeds, "iou": iou}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
