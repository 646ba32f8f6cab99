"""The whole homework as one executed notebook and one PDF: ``dlstudio-aspp handin``.

``make_handin(shapes, coco, out)`` assembles, in the homework's order, the folders the
student made: ``shapes`` an experiments folder (``experiments --out``), ``coco`` a COCO run
or experiments folder; SAM comparisons are read from their ``sam/``. A part not given, or
not made yet, is a section that names the command that makes it. It writes in ``out``:

- ``handin.ipynb``, executed, with the student's answers carried over from the one there
  (:mod:`dlstudio_aspp.answers`);
- ``handin.py``, its code; ``handin.pdf`` and ``handin.html``, each code cell right before
  its output (:mod:`dlstudio_aspp.notebook_document`);
- ``code.zip``: the ``.py`` files to submit (``handin.py`` and the example script a run was
  trained with, when there was one).

The notebook's code cells call this module (:func:`part`, :func:`setup`,
:func:`architecture`), so what is handed in stays short and readable.
"""
from __future__ import annotations

import os
import shlex
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List, Optional

from .atomic import write_with
from .errors import MissingFileError

NOTEBOOK = "handin.ipynb"
SCRIPT = "handin.py"
ZIP = "code.zip"

#: What makes each part, for the section that stands in for a missing one.
MAKES = {"shapes": "dlstudio-aspp experiments --out outputs/hwd (--preset quick on a CPU)",
         "coco": "dlstudio-aspp run --dataset coco --out outputs/coco"}
#: A run folder's section for an experiments folder's (and back); None: only the other kind has it.
RUN_NAMES = {"header": "summary", "loss curves": "training", "qualitative": "test images", "provenance": "appendix",
             "aspp": None, "dice scale": None}
GRID_NAMES = {"summary": "header", "training": "loss curves", "test images": "qualitative", "appendix": "provenance",
              "data": None}


@dataclass(frozen=True)
class Part:
    """One part of the homework: its role ('shapes' or 'coco') and its folder (None: not given)."""

    role: str
    path: Optional[str] = None

    @property
    def kind(self) -> Optional[str]:
        """'grid', 'run', or None when the folder is not given or holds neither."""
        from .grid import GridFolder
        from .run_files import RunFiles

        if self.path is None:
            return None
        folder = Path(self.path)
        return "grid" if GridFolder(folder).exists() else "run" if RunFiles.at(folder).has_card() else None


def _missing(p: Part) -> List[str]:
    given = f"`{p.path}` holds no run or experiments folder" if p.path else f"No {p.role} folder was given"
    return [f"*{given}.* `{MAKES[p.role]}` makes it; then run `dlstudio-aspp handin` again with "
            f"`--{p.role} FOLDER`. Your answers below are kept."]


def _empty(p: Part, name: str) -> List[str]:
    """What stands in for a section with nothing in it yet: the command that makes it."""
    if name == "sam":
        run = f"{p.path}/runs/<a run>" if p.kind == "grid" else p.path
        return [f"*No SAM comparison in `{p.path}/sam` yet.* `dlstudio-aspp sam-compare --run {run}` writes it "
                "there (with `--sam-checkpoint` for SAM's weights, or `--export-demo`, then `--sam-masks` with the "
                "cut-outs or screenshots you saved from the online demo); then run `dlstudio-aspp handin` again."]
    return [f"*Nothing to show for “{name}” in `{p.path}`.*"]


def lines(p: Part, name: str) -> List[str]:
    """The Markdown of section ``name`` of the part ``p`` (a run's or an experiments folder's report
    section, by the name either kind uses), or what stands in for it."""
    from . import report, run_report

    kind = p.kind
    if kind is None:
        return _missing(p)
    own = (RUN_NAMES if kind == "run" else GRID_NAMES).get(name, name)
    if own is None:
        return [f"*`{p.path}` is a {kind} folder; this section needs "
                f"{'an experiments folder' if kind == 'run' else 'a run folder'}.*"]
    got = (run_report.section(own, p.path) if kind == "run" else report.section(own, p.path))
    return got if any(line.strip() for line in got) else _empty(p, own)


def part(p: Part, name: str) -> None:
    """Show section ``name`` of the part ``p`` in the notebook (tables as Markdown, figures as images)."""
    from .notebook import show

    show(lines(p, name), p.path or ".")


def _cards(p: Part) -> list:
    from .card import RunCard
    from .run_files import RunFiles
    from .grid import GridFolder

    if p.kind == "run":
        return [RunCard.load(p.path)]
    if p.kind == "grid":
        runs = GridFolder(p.path).runs_dir
        return [RunCard.load(f) for f in sorted(runs.iterdir()) if RunFiles.at(f).has_card()]
    return []


def setup_lines(*parts: Part) -> List[str]:
    """What was run, on what machine, for how long: one row per part."""
    rows = ["| part | folder | runs | device (threads) | training time | first command |", "|---|---|---|---|---|---|"]
    for p in parts:
        cards = _cards(p)
        if not cards:
            rows.append(f"| {p.role} | {p.path or 'not given'} | 0 | | | `{MAKES[p.role]}` |")
            continue
        prov = cards[0].provenance or {}
        seconds = sum(c.seconds.get("train", 0) for c in cards)
        command = str((prov.get("commands") or [prov.get("command", "not recorded")])[0]).replace("|", "\\|")
        rows.append(f"| {p.role} | `{p.path}` | {len(cards)} | {prov.get('device', '?')} ({prov.get('threads', '?')}) "
                    f"| {_duration(seconds)} | `{command}` |")
    return rows


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min" if seconds < 7200 else f"{seconds / 3600:.1f} h"


def setup(*parts: Part) -> None:
    from .notebook import show

    show(setup_lines(*parts))


def architecture(p: Part) -> None:
    """Print the mUNet+ASPP of the part's first ASPP run: its ASPP module, parameters and GFLOPs."""
    from .model import model_summary

    cards = [c for c in _cards(p) if c.model.get("aspp")] or _cards(p)
    if not cards:
        print("\n".join(_missing(p)))
        return
    card = cards[0]
    model = card.build_model()
    size = tuple(card.image_size)
    summary = model_summary(model, size)
    print(f"{type(model).__name__} from {card.folder}: {summary['params']:,} parameters "
          f"({summary['aspp_params']:,} in ASPP), {summary['gflops']:.3f} GFLOPs for one {size[0]}x{size[1]} image")
    print(getattr(model, "aspp", "no ASPP in this run"))


def _folder_for(path: Optional[str], out: Path) -> Optional[str]:
    return None if path is None else os.path.relpath(Path(path).resolve(), out.resolve())


def make_handin(shapes: Optional[str], coco: Optional[str], out, execute: bool = True, log=print) -> Dict[str, Path]:
    """Write the hand-in of the ``shapes`` and ``coco`` folders (either may be None) into ``out``."""
    from .handin_cells import cells
    from .notebook import write_notebook
    from .notebook_document import render_notebook

    out = Path(out)
    for role, path in (("shapes", shapes), ("coco", coco)):
        if path is not None and not Path(path).is_dir():
            raise MissingFileError(f"--{role} {path} is not a folder; give the folder `{MAKES[role].split(' --out')[0]} "
                                   "--out` wrote")
    out.mkdir(parents=True, exist_ok=True)
    written = write_notebook(cells(_folder_for(shapes, out), _folder_for(coco, out)), out / NOTEBOOK, out / SCRIPT,
                             execute=execute, log=log)
    written.update(render_notebook(out / NOTEBOOK))
    written["zip"] = write_code_zip(out / ZIP, [written["py"], *example_scripts(shapes, coco)])
    return written


def example_scripts(*folders: Optional[str]) -> List[Path]:
    """The example scripts (``python SCRIPT.py``) that trained the runs in ``folders``, where they still exist."""
    found = []
    for path in folders:
        for card in _cards(Part("any", path)):
            for command in card.provenance.get("commands") or [card.provenance.get("command", "")]:
                words = shlex.split(str(command)) if command else []
                script = next((Path(w) for w in words if w.endswith(".py")), None)
                if script is not None and not script.is_absolute():
                    script = Path(card.provenance.get("cwd", ".")) / script
                if script is not None and script.is_file() and script.resolve() not in {f.resolve() for f in found}:
                    found.append(script)
    return found


def write_code_zip(path: Path, files: List[Path]) -> Path:
    """The ``.py`` files to submit, flat, in one zip."""
    def write(f):
        with zipfile.ZipFile(f, "w", zipfile.ZIP_DEFLATED) as z:
            for file in files:
                z.write(file, Path(file).name)

    return write_with(path, write)


__all__ = ["Part", "architecture", "lines", "make_handin", "part", "setup", "setup_lines"]
