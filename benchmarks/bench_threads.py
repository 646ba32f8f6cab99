"""Threads and DataLoader workers of the training loop, alone and with two runs side by side.

Each row trains mUNet+ASPP (depth 16, dense head, modern recipe) for N iterations of
batch 4 on real PurdueShapes images through ``runner.train_run`` (the loop every run uses), in a fresh
process with the given torch threads and DataLoader workers, and reports images/s.
"two at once" starts two such processes together (as two runs of a grid would) and
reports their combined images/s. The ratio column is against the first row (this
package's default on this machine: one run, all cores as threads).

Usage: python benchmarks/bench_threads.py [--iters N] [--depth D]
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table  # noqa: E402

CHILD = r"""
import json, sys, time, torch
threads, workers, iters, depth, out = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
torch.set_num_threads(threads)
from dlstudio_aspp.card import RunCard
from dlstudio_aspp.run_files import RunFiles
from dlstudio_aspp.data.open import open_datasets
from dlstudio_aspp.data.sources import cache_dir
from dlstudio_aspp.losses import get_loss
from dlstudio_aspp.runner import build_model, train_run
from dlstudio_aspp.spec import RunSpec
spec = RunSpec.build("modern", data=str(cache_dir() / "shapes"), depth=depth, seed=0, progress=False, cpu=True,
                     workers=workers, checkpoint_every=0, log_every=10**6)
tr, _ = open_datasets(spec)
loader = torch.utils.data.DataLoader(tr, batch_size=4, shuffle=True, num_workers=workers)
net = build_model(spec, 5)
def train(n, seed):
    s = spec.replace(max_iters=n, seed=seed)
    card = RunCard.for_training(RunFiles.at(out).weights, net, tr, [64, 64], s, get_loss(s.loss))
    train_run(s, card, net, loader, torch.device("cpu"), perf_file=out + "/perf.txt")
train(5, 0)  # warm-up
t = time.perf_counter()
train(iters, 1)
print(json.dumps({"img_s": 4 * iters / (time.perf_counter() - t)}))
"""


def start(threads, workers, iters, depth):
    out = tempfile.mkdtemp(prefix="bench_threads_")
    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
    return subprocess.Popen([sys.executable, "-c", CHILD, str(threads), str(workers), str(iters), str(depth), out],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=out)


def result(proc) -> float:
    out, _ = proc.communicate()
    return json.loads(out.strip().splitlines()[-1])["img_s"]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=60)
    ap.add_argument("--depth", type=int, default=16)
    args = ap.parse_args()
    from dlstudio_aspp.data.sources import cache_dir, fetch_shapes

    fetch_shapes(cache_dir() / "shapes", log=lambda s: None)
    cores = len(os.sched_getaffinity(0))
    configs = [("one run", cores, 0), ("one run", cores, 1), ("one run", 1, 0),
               ("two at once", 1, 0), ("two at once", cores, 0)]
    rows, base = [], None
    for kind, threads, workers in configs:
        procs = [start(threads, workers, args.iters, args.depth) for _ in range(2 if kind == "two at once" else 1)]
        img_s = sum(result(p) for p in procs)
        base = base or img_s
        rows.append([kind, threads, workers, f"{img_s:.1f}", f"{img_s / base:.2f}x"])
    print(f"machine: {cores} cores; {machine()}; depth {args.depth}, batch 4, {args.iters} iterations per run")
    table(rows, ["runs", "torch threads each", "DataLoader workers", "images/s (all runs)", "vs first row"])


if __name__ == "__main__":
    main()
