"""Reading and writing a run's resumable checkpoint, and the weights file, the same on any device.

Every tensor written is on the CPU, whatever device trained the run: ``torch.load`` without
``map_location`` then reads ``saved_model`` and ``<stem>.ckpt`` on a machine with no GPU, as
stock DLStudio's scripts do. Reading always maps onto the CPU; the loop moves what it needs
(``load_state_dict`` copies weights onto the network's device, and an optimizer's state
follows its parameters). The random number generators are saved per kind: the CPU
generator always, and the training device's CUDA generator when a GPU trained the run.

A resumable checkpoint carries the sha256 of its own contents (every tensor's bytes, every value),
so a file cut short or with a flipped bit is known for what it is, and the checkpoint it replaces
is kept beside it (``<stem>.ckpt.prev``, a hard link: no copy) until the new one is durable:
``--resume`` goes on from the newest good one (:func:`newest_good`). The disk holds at most one
checkpoint more than before.
"""
from __future__ import annotations

import csv
import hashlib
import io
from pathlib import Path
from typing import Any, List, Optional, Sequence, Tuple

import torch

from . import crash
from .atomic import keep_as, torch_save, write_json, write_text
from .errors import MissingFileError, UserError

DIGEST = "sha256"  # the checkpoint's key holding the digest of the rest of it


def on_cpu(obj: Any) -> Any:
    """``obj`` with every tensor inside it (dicts, lists, tuples) detached and on the CPU; the rest as is."""
    if torch.is_tensor(obj):
        return obj.detach().to("cpu")
    if isinstance(obj, dict):
        return {k: on_cpu(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return type(obj)(on_cpu(v) for v in obj)
    return obj


def save(obj: Any, path) -> Path:
    """``obj`` (a checkpoint dict or a ``state_dict``) with CPU tensors only, written atomically to ``path``."""
    return torch_save(on_cpu(obj), path)


def load(path, what: str = "checkpoint") -> Any:
    """What :func:`save` wrote to ``path``, every tensor on the CPU; a damaged file is one :class:`UserError`.

    ``what`` names the file in the message ("checkpoint", "weights file")."""
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file raises many kinds
        raise UserError(f"{path} is not a readable {what} ({type(exc).__name__}: cut short, or not written by "
                        "dlstudio-aspp); restore it from a copy, or delete it and train again") from None


def _feed(h, obj: Any) -> None:
    """Add ``obj`` to the hash ``h``: tensors by dtype, shape and bytes; containers in a fixed order."""
    if torch.is_tensor(obj):
        t = obj.detach().to("cpu").contiguous().reshape(-1)
        h.update(f"T{t.dtype}{tuple(obj.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    elif isinstance(obj, dict):
        h.update(b"{")
        for k in sorted(obj, key=repr):
            _feed(h, k), _feed(h, obj[k])
        h.update(b"}")
    elif isinstance(obj, (list, tuple)):
        h.update(b"[")
        for v in obj:
            _feed(h, v)
        h.update(b"]")
    else:
        h.update(repr(obj).encode())


def digest(ck: dict) -> str:
    """The sha256 of a checkpoint's contents (its own digest left out)."""
    h = hashlib.sha256()
    _feed(h, {k: v for k, v in ck.items() if k != DIGEST})
    return h.hexdigest()


def save_checkpoint(ck: dict, path, previous) -> Path:
    """Write the resumable checkpoint ``ck`` (CPU tensors, its digest inside) to ``path`` atomically; the one it
    replaces is kept as ``previous`` until then."""
    path, previous = Path(path), Path(previous)
    ck = on_cpu(ck)
    ck[DIGEST] = digest(ck)
    if path.is_file():
        keep_as(path, previous)
        crash.point("checkpoint-previous-kept")
    return torch_save(ck, path)


def load_checkpoint(path) -> dict:
    """The checkpoint at ``path``, its digest checked; a damaged file is one :class:`UserError`."""
    ck = load(path)
    if not isinstance(ck, dict) or "model" not in ck:
        raise UserError(f"{path} is not a readable checkpoint (no weights in it)")
    if DIGEST in ck and ck.pop(DIGEST) != digest(ck):  # checkpoints written before digests have none
        raise UserError(f"{path} is damaged: its contents do not match the sha256 written with them (a flipped "
                        "bit, or a copy cut off)")
    return ck


def newest_good(paths: Sequence[Path]) -> Tuple[dict, Path, List[str]]:
    """(checkpoint, its path, one note per newer file skipped) for the first of ``paths`` that reads and
    checks out. Raises :class:`MissingFileError` when none exists, :class:`UserError` naming each when
    none is good."""
    existing = [Path(p) for p in paths if Path(p).is_file()]
    if not existing:
        raise MissingFileError(f"cannot resume: there is no checkpoint at {Path(paths[0])}; run without resume to "
                               "start afresh")
    problems: List[str] = []
    for path in existing:
        try:
            return load_checkpoint(path), path, [f"skipped {p}" for p in problems]
        except UserError as exc:
            problems.append(str(exc))
    raise UserError(f"cannot resume: no good checkpoint in {existing[0].parent}: " + "; ".join(problems)
                    + "; run without --resume to start afresh (or --overwrite)")


# ---- the format of a training run's checkpoint: every key it has, written and read here only ----------------

def save_run(run) -> Path:
    """The checkpoint of a training run (``training._Run``): weights, optimizer, schedule, AMP scaler, position,
    history, random generators, the card it trains under (its spec: the run's options), the training data's identity, the
    validation state, the loss's state and, when validation kept others, the last weights."""
    return save_checkpoint({
        "model": run.net.state_dict(), "optimizer": run.optimizer.state_dict(),
        "scheduler": run.scheduler.state_dict() if run.scheduler is not None else None,
        "scaler": run.scaler.state_dict(), "iteration": run.it, "epoch": run.epoch, "batch": run.batch,
        "history": run.history, **rng_state(run.device), "card": run.card.to_json(), "data": run.data,
        "validation": run.validator.state_dict() if run.validator is not None else None,
        "loss_state": run.loss_fn.extra_state() if hasattr(run.loss_fn, "extra_state") else None,
        "last_model": run.last_weights}, run.card.files.checkpoint, run.card.files.previous_checkpoint)


def history_csv(history: dict) -> str:
    keys = ["iteration", "epoch", "loss", "lr"] + sorted(history["components"])
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(keys)
    cols = [history["iteration"], history["epoch"], history["loss"], history["lr"]] + [history["components"][k] for k in keys[4:]]
    w.writerows(zip(*cols))
    return buf.getvalue()


def write_history(history: dict, card) -> None:
    """The history beside a checkpoint: JSON (what the reports read) and CSV (for a spreadsheet)."""
    write_json(card.files.history_json, history, indent=None)
    write_text(card.files.history_csv, history_csv(history))


def saved_options(ck: dict) -> dict:
    """The result options (:meth:`RunSpec.result_values`) of the run that wrote ``ck``: read from the spec of
    the card it carries (the spec's one copy); checkpoints before that kept them under ``options``."""
    if "options" in ck:
        return dict(ck["options"])
    from .spec import RunSpec

    return RunSpec.from_json((ck.get("card") or {}).get("spec") or {}).result_values()


def differences(ck: dict, options: dict, model: dict, data: dict) -> str:
    """What differs between the run that wrote ``ck`` and one with these result ``options``, ``model`` config
    and training ``data`` identity, in words ('' when nothing does)."""
    saved, now = saved_options(ck), dict(options)
    saved.update({f"model.{k}": v for k, v in ((ck.get("card") or {}).get("model") or {}).items()})
    now.update({f"model.{k}": v for k, v in model.items()})
    saved.update({f"data.{k}": v for k, v in (ck.get("data") or {}).items()})
    now.update({f"data.{k}": v for k, v in data.items()})
    differ = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    return ", ".join(f"{k}: checkpoint {saved.get(k)!r}, now {now.get(k)!r}" for k in differ)


def restore_run(run, ck: dict) -> List[Optional[str]]:
    """Put the checkpoint ``ck`` back into the training run ``run``; return the notes on what could not be
    carried over exactly (AMP's loss scale, another kind of device's generator)."""
    run.net.load_state_dict(ck["model"])
    run.optimizer.load_state_dict(ck["optimizer"])
    if run.scheduler is not None and ck.get("scheduler"):
        run.scheduler.load_state_dict(ck["scheduler"])
    notes = [restore_scaler(run.scaler, ck.get("scaler"))]
    run.history, run.it, run.epoch, run.batch = ck["history"], ck["iteration"], ck["epoch"], ck["batch"]
    if run.validator is not None and ck.get("validation"):
        run.validator.load_state_dict(ck["validation"])
    notes.append(restore_rng(ck, run.device))
    if ck.get("loss_state") and hasattr(run.loss_fn, "load_extra_state"):
        run.loss_fn.load_extra_state(ck["loss_state"])
    return notes


def commands(ck: dict) -> List[str]:
    """Every command that trained the run up to ``ck`` (its card's provenance)."""
    earlier = (ck.get("card") or {}).get("provenance") or {}
    return list(earlier.get("commands") or ([earlier["command"]] if earlier.get("command") else []))


def last_model(path) -> Optional[dict]:
    """The last iteration's weights a finished run's checkpoint keeps when validation kept others (else None)."""
    return load_checkpoint(path).get("last_model")


def rng_state(device: torch.device) -> dict:
    """The generators a resumed run needs: the CPU's, and ``device``'s CUDA generator when it is one."""
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return {"rng": torch.get_rng_state(), "cuda_rng": cuda}


def restore_rng(ck: dict, device: torch.device) -> Optional[str]:
    """Set the generators from a checkpoint (as :func:`rng_state` wrote them); return a note when one
    could not be carried over (a run trained on a GPU resumed on a CPU, or the other way round)."""
    torch.set_rng_state(ck["rng"])
    cuda = ck.get("cuda_rng")
    if device.type == "cuda" and cuda is not None:
        torch.cuda.set_rng_state(cuda, device)
        return None
    if device.type == "cuda" or cuda is not None:
        written, here = ("a GPU", "the CPU") if cuda is not None else ("the CPU", "a GPU")
        return f"the checkpoint was written on {written} and this run trains on {here}: only the CPU's random numbers carry over"
    return None


def restore_scaler(scaler: "torch.amp.GradScaler", saved: Optional[dict]) -> Optional[str]:
    """Load AMP's loss scaler; return a note when the checkpoint's AMP setting differs from this run's.

    A checkpoint without a scaler state (AMP was off: a CPU run) resumed with AMP starts the loss
    scale afresh, as any AMP run starts; one with it resumed without AMP trains on in float32."""
    saved = saved or {}
    if scaler.is_enabled() and not saved:
        return "the checkpoint was written without mixed precision: AMP's loss scale starts afresh"
    if not scaler.is_enabled() and saved:
        return "the checkpoint was written with mixed precision on a GPU: training goes on in float32"
    scaler.load_state_dict(saved)
    return None
