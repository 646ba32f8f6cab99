"""Two trained COCO runs on the same test images: each one's pooled IoU, and their
difference with a paired percentile bootstrap over the test images (both runs scored on
the same resamples, so the interval is that of the difference, not of either run).

Usage:
    python benchmarks/compare_coco_runs.py --runs RUN BASE --data SET

RUN and BASE are run folders of ``dlstudio-aspp run --dataset coco`` trained on SET's size;
each is scored with its own card (normalisation, threshold) on SET's test split. The
interval covers which test images were drawn, not the training's own variance: one seed
each is a hint; a choice needs several seeds (``bench_coco_choices.py``).
"""
import argparse

import numpy as np

from dlstudio_aspp.card import RunCard
from dlstudio_aspp.metrics import MultiLabelConfusion, miou_from_counts
from probe_coco_run import outputs


def test_counts(run: str, data: str) -> np.ndarray:
    """(N, C, 3) tp, fp, fn of each test image under the run's own card."""
    card = RunCard.load(run)
    out, truth = outputs(card.load_model(), card, data, "test")
    conf = MultiLabelConfusion(out.shape[1])
    conf.update(out > float(card.thresholds()[0]), truth)
    return conf.image_counts()


def paired_difference(a: np.ndarray, b: np.ndarray, n_boot: int = 2000, seed: int = 0) -> tuple:
    """mIoU(a) - mIoU(b) and its 95% percentile bootstrap interval over the images (same resamples)."""
    rng = np.random.default_rng(seed)
    idx = rng.integers(0, a.shape[0], size=(n_boot, a.shape[0]))
    diffs = miou_from_counts(a[idx]) - miou_from_counts(b[idx])
    lo, hi = np.percentile(diffs, [2.5, 97.5])
    return float(miou_from_counts(a) - miou_from_counts(b)), float(lo), float(hi)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs=2, required=True, metavar=("RUN", "BASE"))
    ap.add_argument("--data", required=True)
    args = ap.parse_args()
    run, base = (test_counts(r, args.data) for r in args.runs)
    for name, counts in zip(args.runs, (run, base)):
        print(f"{name}: test IoU {float(miou_from_counts(counts)):.3f}")
    diff, lo, hi = paired_difference(run, base)
    print(f"{args.runs[0]} - {args.runs[1]}: {diff:+.3f} [{lo:+.3f}, {hi:+.3f}] (paired bootstrap over {run.shape[0]} images)")


if __name__ == "__main__":
    main()
