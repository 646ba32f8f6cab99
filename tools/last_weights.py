"""A copy of a run folder whose weights are its last iteration's, for every command that reads a run.

Usage:
    python tools/last_weights.py RUN OUT

A run with a validation split keeps its best-scoring weights; its finished checkpoint also holds
the last iteration's (``last_model``) when those differ. OUT is RUN copied, with the last weights
saved through the card (which removes the scores of the kept weights), so that
``dlstudio-aspp compare OUT RUN`` pairs the two on the test images, and ``evaluate``, ``report``
and ``predict`` use the last weights. RUN itself is not changed.
"""
import argparse
import shutil
import sys
from pathlib import Path

from dlstudio_aspp.card import RunCard


def save_last(run, out) -> Path:
    """Copy ``run`` to ``out`` with the checkpoint's ``last_model`` as the weights; ``out`` must not exist."""
    last = RunCard.load(run).last_weights()
    if last is None:
        raise SystemExit(f"{run}: its checkpoint holds no last_model (no validation split, or validation kept the last "
                         "weights); its weights already are the last iteration's")
    if Path(out).exists():
        raise SystemExit(f"{out} exists; name a new folder")
    shutil.copytree(run, out)
    copy = RunCard.load(out)
    net = copy.build_model()
    net.load_state_dict(last)
    copy.save_weights(net)
    return Path(out)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("run")
    ap.add_argument("out")
    args = ap.parse_args(argv)
    print(f"wrote {save_last(args.run, args.out)}: the weights of iteration {RunCard.load(args.out).iterations}")


if __name__ == "__main__":
    sys.exit(main())
