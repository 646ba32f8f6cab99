"""The experiment grid on Ray: one Ray task per run, on a laptop, a multi-GPU box or a cluster.

``dlstudio-aspp experiments OUT --executor ray`` submits every unfinished run of the grid
as a task. A task writes its run folder exactly as the serial executor does (checkpoint,
card, metrics, ``summary.json`` last), so skipping finished runs, resuming started ones
and the report work unchanged.

- **Resources.** Each task asks for ``cpus_per_run`` CPUs (and ``gpus_per_run`` GPUs, a
  fraction shares one card) and sets torch's intra-op threads to its CPU share, so
  tasks never oversubscribe the cores.
- **Data.** Every node reads ``--data`` at the same path (a shared file system, or the
  same copy on each node); a node that cannot says so, with its host name.
- **Failures.** A run that fails (an exception, or its worker or node lost) is submitted
  once more; it resumes from its checkpoint if it wrote one. A second failure is
  recorded with its error in ``grid.json`` (``failed``) and in the report, and the rest
  of the grid goes on.
- **Ctrl-C** cancels the tasks: first gently (each task's training takes it as a stop
  signal and saves a checkpoint of its last finished iteration), then, after
  ``CANCEL_GRACE`` seconds, by force. Re-running the command resumes them.
- **Where.** Without ``--address`` a private local Ray is started (``address="local"``),
  even when ``RAY_ADDRESS`` or a running cluster on this machine would otherwise be
  joined: on a shared machine that cluster may be another user's, and its tasks would run
  as that user.
"""
from __future__ import annotations

import socket
import time
from pathlib import Path
from typing import Callable, Dict, Optional, Tuple

from .locks import clean_leftovers
from .errors import UserError


def _ray():
    try:
        import ray
    except ModuleNotFoundError:
        raise UserError("--executor ray needs Ray: pip install -e \".[ray]\" (or pip install ray)") from None
    return ray


def grid_task(spec_json: dict, folder: str, threads: int, command: Optional[str] = None) -> dict:
    """What one Ray task runs: open the data on this node, train and score one run, return its summary.
    ``command``: the grid's command line, for the run's card (the worker's own is Ray's)."""
    import torch

    from .runner import train_and_score
    from .spec import RunSpec

    torch.set_num_threads(max(1, threads))
    clean_leftovers(folder, before=time.time())  # a worker killed mid-write (a retried task)
    spec = RunSpec.from_json(spec_json)
    if not Path(spec.data).is_dir():
        raise UserError(f"node {socket.gethostname()} cannot read --data {spec.data}: every node must see the data at "
                        "the same path (a shared file system, or the same copy on each node)")
    return train_and_score(spec, Path(folder), command=command)


def default_gpus_per_run(cluster: Dict[str, float], cpu: bool) -> float:
    """One GPU per run when the cluster has any and ``--cpu`` is off, else none: decided from the cluster's
    resources (``ray.cluster_resources()``), not the driver's, which may have no GPU."""
    return 1.0 if cluster.get("GPU", 0) > 0 and not cpu else 0.0


def _start(ray, address: Optional[str], num_cpus: Optional[int], gpus_per_run: Optional[float],
           cpu: bool) -> Tuple[bool, float]:
    """Join ``address`` or start a local Ray; return (whether it was started here, the GPUs per run). A task
    asking for more GPUs than the cluster has would wait forever: one line instead."""
    started_here = not ray.is_initialized()
    if started_here:
        kwargs = dict(address=address) if address else dict(address="local", num_cpus=num_cpus)
        ray.init(include_dashboard=False, log_to_driver=False, **kwargs)
    cluster = ray.cluster_resources()
    if gpus_per_run is None:
        gpus_per_run = default_gpus_per_run(cluster, cpu)
    if gpus_per_run > cluster.get("GPU", 0):
        if started_here:
            ray.shutdown()
        raise UserError(f"--gpus-per-run {gpus_per_run:g} asks for more GPUs than the Ray cluster has "
                        f"({cluster.get('GPU', 0):g}); lower it, or --gpus-per-run 0 to train on the CPUs")
    return started_here, gpus_per_run


def run_grid_ray(cfg, out, *, address: Optional[str] = None, cpus_per_run: float = 1,
                 gpus_per_run: Optional[float] = None,
                 num_cpus: Optional[int] = None, task: Callable = grid_task,
                 on_finish: Optional[Callable[[str, dict], None]] = None) -> Dict[str, dict]:
    """Run the grid's unfinished runs as Ray tasks; return ``{run name: summary or {'error': ...}}``.

    Args:
        cfg, out: as :func:`dlstudio_aspp.experiments.run_grid` (checked and prepared the same way).
        address: a running cluster ('auto' or 'HOST:PORT'); None starts a local Ray.
        cpus_per_run, gpus_per_run: resources of each task (fractions allowed for GPUs); gpus_per_run None:
            :func:`default_gpus_per_run` of the cluster.
        num_cpus: CPUs of a local Ray (default: all).
        task: the function a task runs (tests swap in one that fails on purpose).
        on_finish: called with (run name, summary) as each run ends.
    """
    from .experiments import plan_grid, record_grid
    from .provenance import command_line

    ray = _ray()
    if cpus_per_run <= 0 or (gpus_per_run is not None and gpus_per_run < 0):
        raise UserError(f"--cpus-per-run must be > 0 and --gpus-per-run >= 0, got {cpus_per_run}, {gpus_per_run}")
    plan = plan_grid(cfg, Path(out).resolve())  # grid.json once the cluster has taken the resources too
    folder, cfg = plan.folder, plan.cfg
    data = str(Path(cfg.spec.data).resolve()) + "/"
    threads = max(1, int(cpus_per_run))
    workers = min(cfg.spec.workers if cfg.spec.workers is not None else 0, threads - 1)  # within the task's CPUs
    todo = [(name, spec.replace(data=data, progress=False, workers=workers)) for name, spec in cfg.cells()
            if not folder.is_finished(name)]
    skipped = len(cfg.cells()) - len(todo)
    if skipped:
        print(f"{skipped} finished runs skipped")
    if not todo:
        return {}
    started_here, gpus_per_run = _start(ray, address, num_cpus, gpus_per_run, cfg.spec.cpu)
    record_grid(plan)
    remote = ray.remote(task).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)
    command = command_line()  # the grid's, for every run's card

    def submit(name, spec):
        return remote.remote(spec.to_json(), str(folder.run_folder(name)), threads, command)

    from tqdm.auto import tqdm

    bar = tqdm(total=len(todo), desc="runs", unit="run")
    failed: Dict[str, str] = {}
    try:
        results = _collect(ray, {submit(name, spec): (name, spec, 1) for name, spec in todo}, submit, bar, failed,
                           on_finish)
    except KeyboardInterrupt:
        bar.write("cancelled the remaining runs; re-run the same command to resume them")
        raise
    finally:
        bar.close()
        folder.record_failures(failed)
        if started_here:
            ray.shutdown()
    return results


def _collect(ray, pending: dict, submit, bar, failed: Dict[str, str], on_finish) -> Dict[str, dict]:
    """Wait for the tasks; retry a failed one once, then record it in ``failed``. Ctrl-C cancels the rest."""
    results: Dict[str, dict] = {}
    try:
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1)
            name, spec, attempt = pending.pop(done[0])
            try:
                summary = ray.get(done[0])
            except (ray.exceptions.RayError, UserError) as exc:
                error = _short(exc)
                if attempt == 1:
                    bar.write(f"{name} failed ({error}); retrying once")
                    pending[submit(name, spec)] = (name, spec, 2)
                    continue
                bar.write(f"{name} failed again ({error}); recorded as failed, the grid goes on")
                failed[name] = error
                results[name] = {"error": error, "attempts": attempt}
                bar.update(1)
                continue
            results[name] = summary
            bar.write(f"{name} finished: test mIoU {summary['miou']:.3f}")
            bar.update(1)
            if on_finish is not None:
                on_finish(name, summary)
    except KeyboardInterrupt:
        _cancel(ray, list(pending))
        raise
    return results


#: Seconds a cancelled task has to save its checkpoint before it is killed.
CANCEL_GRACE = 30.0


def _cancel(ray, refs) -> None:
    """Cancel gently (the task's training saves a checkpoint and stops), then by force after the grace period."""
    for ref in refs:
        ray.cancel(ref, force=False)
    _, left = ray.wait(refs, num_returns=len(refs), timeout=CANCEL_GRACE) if refs else ([], [])
    for ref in left:
        ray.cancel(ref, force=True)


def _short(exc: BaseException) -> str:
    """The last line of a (Ray-wrapped) error: its type and message."""
    cause = getattr(exc, "cause", None)
    if cause is not None and not isinstance(cause, type(exc)):
        return f"{type(cause).__name__}: {cause}".splitlines()[0][:300]
    lines = [line for line in str(exc).strip().splitlines() if line.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:300]

