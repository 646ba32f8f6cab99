"""The notebook to hand in: ``report.ipynb``, executed, with every table and figure under the code that made it.

``dlstudio-aspp report FOLDER`` writes it beside ``report.md`` (``--format ipynb``). For a run
folder or an experiments folder it holds, section by section:

- a Markdown cell with the section's title;
- a short code cell that calls the package's public API on the folder (``run_report.section``
  or ``report.section``) and shows what it returns: tables as Markdown, figures as images;
- after the sections the homework asks about, its question and an empty answer for the
  student to write.

It is built with nbformat and executed with nbclient in the folder itself (it reads only
the run files there: no data, no download), so each code cell's output is stored next to
it. Each answer cell carries a stable id; generating the notebook again carries every answer
and every cell the student added into the new one (:mod:`dlstudio_aspp.answers`) and keeps
the old one as ``report.previous.ipynb``. :func:`write_notebook` does this for ``report`` and
``handin`` alike. The code cells are also written as ``report_notebook.py`` in the percent
format Jupyter, VS Code and jupytext open, for the ``.py`` hand-in; the PDF of the executed
notebook is :mod:`dlstudio_aspp.notebook_document`'s.
"""
from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Dict, List, Optional, Sequence

from .answers import ANSWER, answer_cell, carry_answers, generated  # noqa: F401 (ANSWER: re-exported)
from .atomic import write_bytes, write_text, write_with
from .errors import UserError

NOTEBOOK = "report.ipynb"
SCRIPT = "report_notebook.py"
#: Seconds one code cell may run before the execution stops with an error.
CELL_TIMEOUT = 600

#: The homework's questions, each shown after the report section it is about.
QUESTIONS: Dict[str, str] = {
    "munet": "**Question.** Write a brief account of your understanding of mUNet and how it carries out semantic "
             "segmentation: the encoder, the skip connections, the decoder and the output layer, and what the ASPP "
             "you placed at its bottleneck adds (use the architecture printed above).",
    "coco": "**Question.** Repeat the experiments with MS-COCO: how was the set built (the classes, instances with a "
            "bounding box of at least 200x200, images and masks at 256x256 or the size used, and why), how well does "
            "mUNet with ASPP do on these real photographs against the floors, and where does it fail?",
    "loss curves": "**Question.** Show the best- and worst-case loss curves for MSE, Dice and Dice+MSE at two scales. "
                   "What do the variations between seeds and between losses tell you?",
    "dice scale": "**Question.** Does Dice+MSE need a scale factor for the Dice term? Why, given the magnitudes "
                  "of the two terms measured above?",
    "qualitative": "**Question.** What do you observe in the qualitative results (at least 3 images per case)? "
                   "Where does each loss, with and without ASPP, succeed and fail?",
    "test images": "**Question.** What do you observe in these test images? For COCO at 256x256: how do the "
                   "masks compare with the Shapes results, and why?",
    "what aspp does": "**Question.** How does mUNet carry out semantic segmentation of an image, and what does the "
                      "ASPP at its bottleneck change? Use the receptive fields and the branch-by-branch table above: "
                      "how far does an output pixel see, which branches does the trained network rely on, and does "
                      "each dilation rate earn its place at this bottleneck?",
    "sam": "**Question.** SAM against mUNet on the 5 Shapes and 5 COCO images: compare edge accuracy, "
           "completeness, false positives and false negatives, with the figures and numbers above.",
}


#: Each section's title in the notebook (the cell above its code).
TITLES = {"header": "The experiments", "loss curves": "Training loss: best and worst seed",
          "test metrics": "Test metrics", "aspp": "ASPP on and off", "qualitative": "Qualitative results",
          "dice scale": "Dice scale factor", "failures": "Failed runs", "sam": "SAM against mUNet",
          "provenance": "How it was made", "summary": "The run", "training": "Training", "test images": "Test images",
          "data": "Data", "what aspp does": "What ASPP does", "appendix": "Appendix: the commands and the options"}
#: Sections whose content is always there (they draw figures; the others are checked before they are listed).
ALWAYS = {"header", "loss curves", "test metrics", "aspp", "qualitative", "dice scale", "provenance", "summary",
          "training", "appendix"}


def show(lines: Sequence[str] | str, folder=".") -> None:
    """Display a report section in a notebook: its text as Markdown, each figure as an image.

    ``lines``: the section's Markdown (as :func:`dlstudio_aspp.report.section` returns it), whose
    own first heading is left out (the notebook's cell above carries it); image paths are read
    relative to ``folder``."""
    from IPython.display import Image, Markdown, display

    text = "\n".join(lines) if not isinstance(lines, str) else lines
    text = re.sub(r"\A\s*#{1,2} [^\n]*\n", "", text)
    chunks = re.split(r"^!\[[^\]]*\]\(([^)]+)\)\s*$", text, flags=re.M)
    for k, chunk in enumerate(chunks):
        if k % 2:
            display(Image(filename=str(Path(folder) / chunk)))
        elif chunk.strip():
            display(Markdown(chunk))


def question_cells(qid: str) -> List:
    """The question ``qid`` (:data:`QUESTIONS`) and the empty answer cell under it."""
    import nbformat.v4 as nbf

    return [generated(nbf.new_markdown_cell(QUESTIONS[qid]), f"question:{qid}"), answer_cell(qid)]


def section_cells(name: str, call: str, title: Optional[str] = None) -> List:
    """A section's title, the code cell ``call`` that shows it, and its question if it has one."""
    import nbformat.v4 as nbf

    cells = [generated(nbf.new_markdown_cell(f"## {title or TITLES.get(name, name)}"), f"title:{name}"),
             generated(nbf.new_code_cell(call), f"code:{name}")]
    return cells + (question_cells(name) if name in QUESTIONS else [])


def _cells(kind: str, sections: Sequence[str]) -> List:
    import nbformat.v4 as nbf

    module = "report" if kind == "grid" else "run_report"
    what = "experiments folder" if kind == "grid" else "run folder"
    cells = [generated(nbf.new_markdown_cell(
        f"# Report\n\nThis notebook lives in the {what} it reports on; each code cell below reads the run files "
        f"here through `dlstudio_aspp.{module}` and shows a table or a figure. Write your answers under each "
        "question: generating the notebook again (`dlstudio-aspp report`) keeps them."), "intro"),
        generated(nbf.new_code_cell(f"from dlstudio_aspp import {module}\nfrom dlstudio_aspp.notebook import show\n\n"
                                    f"FOLDER = '.'  # the {what}"
                                    + ("\nruns = report.grid_runs(FOLDER)[1]  # every finished run's card, history and metrics"
                                       if kind == "grid" else "")), "setup")]
    extra = ", runs" if kind == "grid" else ""
    for name in sections:
        cells += section_cells(name, f"show({module}.section({name!r}, FOLDER{extra}))")
    if "sam" not in sections:
        cells.append(generated(nbf.new_markdown_cell(
            f"## {TITLES['sam']}\n\nThis folder holds no SAM comparison yet: `dlstudio-aspp sam-compare --run RUN ...` "
            "writes one into the folder's `sam/`; then `dlstudio-aspp report` on this folder again adds it here."),
            "title:sam"))
        cells += question_cells("sam")
    return cells


def _sections(folder: Path) -> tuple:
    """('grid' or 'run', the sections that have content in ``folder``)."""
    from .grid import GridFolder

    if GridFolder(folder).exists():
        from . import report

        grid, runs = report.grid_runs(folder)
        return "grid", [name for name, fn in report.SECTIONS.items() if name in ALWAYS or fn(grid, runs)]
    from . import run_report

    return "run", [name for name in run_report.SECTIONS if name in ALWAYS or run_report.section(name, folder)]


def make_notebook(folder, execute: bool = True, log=print) -> Dict[str, Path]:
    """Write ``report.ipynb`` (executed unless ``execute`` is False) and ``report_notebook.py`` in ``folder``,
    carrying the answers of a ``report.ipynb`` already there."""
    folder = Path(folder)
    kind, sections = _sections(folder)
    return write_notebook(_cells(kind, sections), folder / NOTEBOOK, folder / SCRIPT, execute=execute, log=log)


def _read_previous(path: Path):
    """The notebook at ``path`` (None when there is none); one line, and nothing written, when it cannot be read."""
    from .notebook_document import read_notebook

    return read_notebook(path, hint="nothing was written; fix it or move it away, then run the command again") \
        if path.is_file() else None


def write_notebook(cells: List, path: Path, script: Path, execute: bool = True, log=print) -> Dict[str, Path]:
    """Write the notebook of ``cells`` at ``path`` (executed in its folder) and its code as ``script``.

    When ``path`` already holds a notebook, every answer and added cell in it is carried over
    (:func:`dlstudio_aspp.answers.carry_answers`), it is kept as ``*.previous.ipynb``, and one
    line says how many were carried. A failed cell writes nothing."""
    import nbformat

    path = Path(path)
    old = _read_previous(path)
    nb = nbformat.v4.new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    carried = carry_answers(old, nb, QUESTIONS, TITLES) if old is not None else 0
    if execute:
        _execute(nb, path.parent)
    written = {}
    if old is not None:
        written["previous"] = write_bytes(path.with_suffix(".previous.ipynb"), path.read_bytes())
        log(f"{path.name}: carried {carried} answer(s) and added cell(s) from the notebook that was there "
            f"(kept as {written['previous'].name})")
    write_with(path, lambda f: f.write(nbformat.writes(nb).encode("utf-8")))
    return {"ipynb": path, "py": write_text(script, to_script(nb)), **written}


def _execute(nb, folder: Path) -> None:
    try:
        from nbclient import NotebookClient
        from nbclient.exceptions import CellExecutionError
        from jupyter_client.kernelspec import NoSuchKernel
    except ImportError as exc:  # pragma: no cover - both are install_requires
        raise UserError(f"executing the notebook needs nbclient and ipykernel ({exc}); pip install nbclient ipykernel") from None
    client = NotebookClient(nb, timeout=CELL_TIMEOUT, kernel_name="python3", resources={"metadata": {"path": str(folder)}})
    try:
        client.execute(stderr=subprocess.DEVNULL)  # the kernel's own start-up chatter, not the cells' output
    except NoSuchKernel:
        raise UserError("no Jupyter 'python3' kernel is installed to execute the notebook; pip install ipykernel") from None
    except CellExecutionError as exc:
        first = str(exc).strip().splitlines()[-1] if str(exc).strip() else repr(exc)
        raise UserError(f"a cell of the notebook failed while it ran in {folder}: {first}") from None


def to_script(nb) -> str:
    """The notebook as a percent-format script: ``# %%`` before each code cell, Markdown as ``# %% [markdown]``
    comments, so the answers travel with the code."""
    parts = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            parts.append("# %% [markdown]\n" + "\n".join(f"# {line}".rstrip() for line in cell.source.splitlines()))
        else:
            parts.append("# %%\n" + cell.source)
    return "\n\n".join(parts) + "\n"
