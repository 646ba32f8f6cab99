"""Soak: SIGKILL a small `run` at random moments, many times, and check that every run, resumed after its kills,
ends on the uninterrupted run's weights byte for byte with no `.part` file left.

Each case runs `dlstudio-aspp run` (synthetic 8-image set, depth 4, 8 iterations, a checkpoint every 2) in a forked
child of this process (torch imported once), kills it 1 to 3 times at a random moment (uniform in 0.05..2.5 s; the
next attempt resumes when a checkpoint exists), then finishes it and compares the sha256 of ``saved_model``.

Usage: python benchmarks/soak_kills.py --kills 1000 [--seed 0] [--json soak.json]
"""
import argparse
import hashlib
import io
import json
import os
import random
import signal
import sys
import tempfile
import time
from contextlib import redirect_stderr, redirect_stdout
from pathlib import Path


def _fork_run(argv):
    import torch

    from dlstudio_aspp import cli

    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            torch.set_num_threads(1)
            with redirect_stdout(io.StringIO()), redirect_stderr(io.StringIO()):
                code = cli.main(argv)
        finally:
            os._exit(code)
    return pid


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--kills", type=int, default=1000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    from dlstudio_aspp.data.sources import make_shapes

    root = Path(tempfile.mkdtemp(prefix="soak_"))
    make_shapes(root / "data", train=8, test=2, seed=0)
    base = ["run", "--data", str(root / "data"), "--train-file", "PurdueShapes5MultiObject-8-train.gz", "--test-file",
            "PurdueShapes5MultiObject-2-test.gz", "--depth", "4", "--no-progress", "--seed", "5", "--max-iters", "8",
            "--cpu", "--checkpoint-every", "2", "--checkpoint-seconds", "0", "--test-subset", "2"]

    def argv(out):
        return base + ["--out", str(out)] + (["--resume"] if (out / "saved_model.ckpt").exists() else [])

    def finish(out) -> int:
        pid = _fork_run(argv(out))
        return os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])

    assert finish(root / "calm") == 0
    expected = hashlib.sha256((root / "calm" / "saved_model").read_bytes()).hexdigest()
    rng = random.Random(args.seed)
    kills = cases = exact = 0
    bad = []
    started = time.time()
    while kills < args.kills:
        out = root / f"case{cases}"
        for _ in range(min(rng.randint(1, 3), args.kills - kills)):
            pid = _fork_run(argv(out))
            time.sleep(rng.uniform(0.05, 2.5))
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            kills += 1
        rc = finish(out)
        ok = rc == 0 and hashlib.sha256((out / "saved_model").read_bytes()).hexdigest() == expected \
            and not list(out.rglob("*.part"))
        exact += ok
        if not ok:
            bad.append({"case": cases, "rc": rc})
        cases += 1
        if cases % 25 == 0:
            print(f"{kills} kills, {cases} runs, {exact} exact, {time.time() - started:.0f} s", flush=True)
            if args.json:  # what a stopped soak reached
                Path(args.json).write_text(json.dumps({"kills": kills, "runs": cases, "exact": exact, "partial": True}))
        for p in sorted(out.rglob("*"), reverse=True):  # keep the disk small: only the verdict matters
            p.unlink() if p.is_file() else p.rmdir()
    result = {"kills": kills, "runs": cases, "exact": exact, "not_exact": bad, "seconds": round(time.time() - started),
              "seed": args.seed, "machine": f"{os.cpu_count()} CPUs, python {sys.version.split()[0]}"}
    print(json.dumps(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1))
    return 0 if exact == cases else 1


if __name__ == "__main__":
    sys.exit(main())
