"""report.ipynb: executed, code next to its output, the homework's questions, and its code as a .py file."""
import shutil
import subprocess
import sys

import nbformat
import pytest

from dlstudio_aspp import cli
from dlstudio_aspp.errors import MissingFileError, UserError
from dlstudio_aspp.notebook import ANSWER, NOTEBOOK, QUESTIONS, SCRIPT, make_notebook

from conftest import SYN_FILES as FILES


def _outputs(cell):
    return [o for o in cell.get("outputs", [])]


def _check_executed(nb):
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code and all("dlstudio_aspp" in code[0].source for _ in [0])
    assert all(c.execution_count for c in code), "every code cell ran"
    errors = [o for c in code for o in _outputs(c) if o.output_type == "error"]
    assert not errors, errors
    shows = [c for c in code if c.source.startswith("show(")]
    assert shows and all(_outputs(c) for c in shows), "each section's output is stored under its code"
    assert any("image/png" in o.get("data", {}) for c in shows for o in _outputs(c)), "a figure among the outputs"
    assert any("text/markdown" in o.get("data", {}) and "|---|" in o["data"]["text/markdown"]
               for c in shows for o in _outputs(c)), "a table among the outputs"


@pytest.mark.slow
def test_the_run_notebook_is_executed_where_the_run_is_with_no_data(trained_run, tmp_path, capsys):
    run = tmp_path / "moved" / "run"
    shutil.copytree(trained_run, run)  # away from its data: the notebook reads only the run's files
    assert cli.main(["report", str(run)]) == 0
    printed = capsys.readouterr().out
    assert f"ipynb: {run / NOTEBOOK}" in printed and f"py: {run / SCRIPT}" in printed
    nb = nbformat.read(run / NOTEBOOK, as_version=4)
    _check_executed(nb)
    text = "\n".join(c.source for c in nb.cells if c.cell_type == "markdown")
    assert QUESTIONS["test images"] in text and QUESTIONS["sam"] in text and text.count(ANSWER) >= 2
    assert "run_report.section('test metrics', FOLDER)" in "\n".join(c.source for c in nb.cells)
    script = (run / SCRIPT).read_text()
    assert script.count("# %%") == len(nb.cells) and "# *Your answer:*" in script
    done = subprocess.run([sys.executable, SCRIPT], cwd=run, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    from nbclient import NotebookClient  # the student's re-execution after editing an answer

    nb.cells[-1].source += " The masks are coarse at the edges."
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(run)}}).execute(
        stderr=subprocess.DEVNULL)
    _check_executed(nb)


@pytest.mark.slow
def test_the_grid_notebook_asks_the_homeworks_questions_under_their_sections(synthetic_shapes, tmp_path):
    from dlstudio_aspp.experiments import GridConfig, run_grid

    cfg = GridConfig.from_preset("smoke", data=synthetic_shapes, train_file=FILES[0], test_file=FILES[1],
                                 losses=["mse", "dice+mse:20"], seeds=[0], max_iters=2, progress=False, cpu=True)
    run_grid(cfg, tmp_path)
    written = make_notebook(tmp_path)
    nb = nbformat.read(written["ipynb"], as_version=4)
    _check_executed(nb)
    sources = [c.source for c in nb.cells]
    for section in ("loss curves", "qualitative", "dice scale"):
        at = sources.index(f"show(report.section({section!r}, FOLDER, runs))")
        assert sources[at + 1:at + 3] == [QUESTIONS[section], ANSWER]
        assert nb.cells[at + 2].metadata["dlstudio_aspp"] == {"answer": section}
    assert "no SAM comparison yet" in sources[-3] and sources[-2:] == [QUESTIONS["sam"], ANSWER]


def test_a_folder_that_is_not_a_run_is_one_line(tmp_path):
    with pytest.raises(MissingFileError, match=r"saved_model\.json is missing: pass a run folder"):
        make_notebook(tmp_path)


def test_show_displays_text_as_markdown_and_figures_as_images(trained_run, monkeypatch):
    import IPython.display as display

    shown = []
    monkeypatch.setattr(display, "display", lambda obj: shown.append(obj))
    from dlstudio_aspp.notebook import show
    from dlstudio_aspp.run_report import section

    show(section("test images", trained_run), trained_run)
    kinds = [type(o).__name__ for o in shown]
    assert kinds == ["Markdown", "Image"], kinds  # the section's own heading left out: the cell above carries it
    assert "## Test images" not in shown[0].data and shown[1].data[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.slow
def test_a_cell_that_fails_is_one_line_naming_the_folder(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / "saved_model.history.json").unlink()  # the training section cannot be drawn
    with pytest.raises(UserError, match=f"a cell of the notebook failed while it ran in {run}: .*history"):
        make_notebook(run)


@pytest.mark.slow
def test_an_answer_in_report_ipynb_survives_report_again_after_a_new_sam_compare(trained_run, tmp_path, capsys):
    """Bug: `report` after `sam-compare` rewrote report.ipynb from scratch and the answers typed in it were gone."""
    from pypdf import PdfReader

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    assert cli.main(["report", str(run), "--format", "ipynb,pdf"]) == 0
    nb = nbformat.read(run / NOTEBOOK, as_version=4)
    answer = next(c for c in nb.cells if c.metadata.get("dlstudio_aspp", {}).get("answer") == "test images")
    answer.source = ANSWER + "The disks are found; the stars are not."
    nbformat.write(nb, run / NOTEBOOK)
    (run / "sam").mkdir()
    (run / "sam" / "sam_shapes_metrics.md").write_text("| image | method | IoU |\n|---|---|---|\n| 0 | SAM | 0.654 |\n")
    capsys.readouterr()
    assert cli.main(["report", str(run), "--format", "ipynb,pdf"]) == 0
    assert "carried 1 answer(s)" in capsys.readouterr().out and (run / "report.previous.ipynb").is_file()
    again = nbformat.read(run / NOTEBOOK, as_version=4)
    sources = [c.source for c in again.cells]
    assert ANSWER + "The disks are found; the stars are not." in sources
    text = "".join(page.extract_text() for page in PdfReader(str(run / "report.pdf")).pages)
    assert "The disks are found; the stars are not." in text and "0.654" in text


def test_an_unreadable_notebook_is_never_overwritten(trained_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (run / NOTEBOOK).write_text('{"cells": [ half a notebook')
    with pytest.raises(UserError, match=r"report\.ipynb cannot be read as a notebook .*nothing was written"):
        make_notebook(run)
    assert (run / NOTEBOOK).read_text() == '{"cells": [ half a notebook'
