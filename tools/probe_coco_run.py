"""What limits a trained COCO run: how well it fits its training images, whether another
threshold or flip averaging would help, and how a run trained at a smaller size scores at
a larger one.

Usage:
    python tools/probe_coco_run.py --run RUN --data SET [--larger SET2]

RUN is a run folder of ``dlstudio-aspp run --dataset coco``; SET the built set it was trained
on. Prints pooled person IoU (as every metric of the package pools it) on:
  - the training images (all of them, validation split included; no augmentation),
  - the test images at thresholds around the card's, and with the horizontally flipped
    image's output averaged in,
  - with ``--larger``: the test images of SET2, the input resized down to the run's size
    and the logits bilinearly resized up, so that runs trained at different sizes are
    scored against the same masks,
  - the test images with the last iteration's weights, when validation kept others (the
    finished checkpoint holds them as ``last_model``): what the choice gained or lost.
The thresholds are a diagnostic on the test images, not a choice: nothing here changes a run.
"""
import argparse

import torch
import torch.nn.functional as F

from dlstudio_aspp.card import RunCard
from dlstudio_aspp.data.coco import COCOSegmentationDataset
from dlstudio_aspp.metrics import MultiLabelConfusion


def outputs(net, card, root: str, split: str, size=None, flip: bool = False):
    """(logits (N, C, S, S), truth (N, C, S, S) mask) over a split; inputs resized to ``size`` when given.

    ``flip``: the logits of the horizontally flipped images, flipped back (to average with the plain ones).
    """
    ds = COCOSegmentationDataset(None, None, split, root=root)
    outs, truth = [], []
    with torch.inference_mode():
        for i in range(0, len(ds), 8):
            items = [ds[j] for j in range(i, min(i + 8, len(ds)))]
            im = torch.stack([d["image"] for d in items])
            truth.append(torch.stack([d["mask_tensor"] for d in items]))
            x = im if size is None else F.interpolate(im, size=size, mode="bilinear", antialias=True, align_corners=False)
            x = card.prepare_input(x)
            out = net(x.flip(-1)).float().flip(-1) if flip else net(x).float()
            if size is not None:
                out = F.interpolate(out, size=im.shape[-2:], mode="bilinear", align_corners=False)
            outs.append(out)
    return torch.cat(outs), torch.cat(truth)


def pooled_iou(out: torch.Tensor, truth: torch.Tensor, threshold: float) -> float:
    """Mean IoU of ``out > threshold``, pooled over the images as the package's metrics are."""
    conf = MultiLabelConfusion(out.shape[1])
    conf.update(out > threshold, truth)
    return conf.compute()["miou"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--run", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--larger", help="a set built at a larger --size, to score against its masks")
    args = ap.parse_args()
    card = RunCard.load(args.run)
    if card.output != "logits":
        raise SystemExit(f"{args.run} was trained on raw outputs; this probe reads logits (the modern and coco recipes)")
    net = card.load_model()
    t0 = float(card.thresholds()[0])
    print(f"{args.run}: {card.image_size[0]}x{card.image_size[1]}, {card.iterations} iterations, threshold {t0:g}")
    print(f"training images (fit): {pooled_iou(*outputs(net, card, args.data, 'train'), t0):.3f}")
    out, truth = outputs(net, card, args.data, "test")
    shifts = (-1.0, -0.5, 0.0, 0.5, 1.0)
    print("test, threshold " + ", ".join(f"{t0 + s:+g}: {pooled_iou(out, truth, t0 + s):.3f}" for s in shifts))
    flipped, _ = outputs(net, card, args.data, "test", flip=True)
    print(f"test, flip averaged: {pooled_iou((out + flipped) / 2, truth, t0):.3f}")
    if args.larger:
        out, truth = outputs(net, card, args.larger, "test", size=tuple(card.image_size))
        print(f"test of {args.larger} at {truth.shape[-1]}x{truth.shape[-1]}, logits resized up: {pooled_iou(out, truth, t0):.3f}")
    last = card.last_weights()
    if last is not None:  # last, so the kept weights need not be put back
        net.load_state_dict(last)
        print(f"test, last weights (iteration {card.iterations}) instead of the kept ones: "
              f"{pooled_iou(*outputs(net, card, args.data, 'test'), t0):.3f}; "
              f"their fit: {pooled_iou(*outputs(net, card, args.data, 'train'), t0):.3f}")


if __name__ == "__main__":
    main()
