"""Grid throughput: the serial executor against ``--executor ray``, back to back on this machine.

The same small grid (quick preset: modern recipe, dense head, depth 8; one loss, ASPP on
and off, two seeds = 4 runs; --max-iters and --test-subset shortened) runs twice into
fresh folders: serially (one run at a time, torch using every core as threads), then as
Ray tasks of --cpus-per-run CPUs each (threads = that share). Reports runs per hour and
the ratio.

Usage: python benchmarks/bench_ray.py [--iters N] [--test N] [--cpus-per-run C]
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import machine, table  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--iters", type=int, default=100)
    ap.add_argument("--test", type=int, default=200)
    ap.add_argument("--cpus-per-run", type=int, default=1)
    args = ap.parse_args()
    from dlstudio_aspp.data.sources import cache_dir, fetch_shapes

    data = cache_dir() / "shapes"
    fetch_shapes(data, log=lambda s: None)
    grid = ["--data", str(data), "--preset", "quick", "--losses", "bce+dice", "--aspp", "both", "--seeds", "0,1",
            "--max-iters", str(args.iters), "--test-subset", str(args.test), "--no-report", "--no-progress", "--cpu"]
    rows, base = [], None
    for name, extra in (("serial", []), ("ray", ["--executor", "ray", "--cpus-per-run", str(args.cpus_per_run)])):
        out = tempfile.mkdtemp(prefix=f"bench_ray_{name}_")
        t = time.perf_counter()
        subprocess.run([sys.executable, "-m", "dlstudio_aspp.cli", "experiments", out, *grid, *extra], check=True,
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        sec = time.perf_counter() - t
        runs = len(list(Path(out, "runs").glob("*/summary.json")))
        per_hour = runs * 3600 / sec
        base = base or per_hour
        rows.append([name, runs, f"{sec:.0f}", f"{per_hour:.0f}", f"{per_hour / base:.2f}x"])
    print(f"machine: {len(os.sched_getaffinity(0))} cores; {machine()}; {args.iters} iterations and {args.test} test "
          f"images per run; ray: {args.cpus_per_run} CPU(s) per task")
    table(rows, ["executor", "runs", "seconds", "runs/hour", "vs serial"])


if __name__ == "__main__":
    main()
