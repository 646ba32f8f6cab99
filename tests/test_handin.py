"""`handin`: the whole homework in its order, one executed notebook, its PDF with code before output, code.zip;
the student's answers survive every regeneration."""
import base64
import io
import json
import re
import shutil
import zipfile

import nbformat
import pytest
from PIL import Image

from dlstudio_aspp import cli
from dlstudio_aspp.answers import ANSWER, ORPHANS
from dlstudio_aspp.handin_cells import TASKS

from conftest import SYN_FILES as FILES


@pytest.fixture(scope="module")
def grid(synthetic_shapes, tmp_path_factory):
    """A 4-loss smoke grid (one seed, ASPP on and off) on the synthetic Shapes."""
    from dlstudio_aspp.experiments import GridConfig, run_grid

    folder = tmp_path_factory.mktemp("handin_grid")
    cfg = GridConfig.from_preset("smoke", data=synthetic_shapes, train_file=FILES[0], test_file=FILES[1],
                                 losses=["mse", "dice", "dice+mse:20", "bce+dice"], seeds=[0], max_iters=2,
                                 progress=False, cpu=True)
    run_grid(cfg, folder)
    return folder


def _pdf_text(path) -> str:
    from pypdf import PdfReader

    return "\n".join(page.extract_text() for page in PdfReader(str(path)).pages)


def _with_sam(run, tmp_path):
    """A copy of ``run`` with a SAM comparison in its sam/ (what sam-compare writes there)."""
    copy = tmp_path / "coco"
    shutil.copytree(run, copy)
    (copy / "sam").mkdir(exist_ok=True)
    (copy / "sam" / "sam_shapes_metrics.md").write_text("| image | method | IoU |\n|---|---|---|\n| 0 | SAM | 0.777 |\n")
    Image.new("RGB", (40, 20), "red").save(copy / "sam" / "sam_shapes.png")
    return copy


def _answers(nb):
    return {c.metadata["dlstudio_aspp"]["answer"]: c for c in nb.cells if "answer" in c.metadata.get("dlstudio_aspp", {})}


@pytest.mark.slow
def test_handin_writes_the_homework_in_its_order_with_code_before_output(grid, trained_run, tmp_path, capsys):
    out = tmp_path / "handin"
    assert cli.main(["handin", "--shapes", str(grid), "--coco", str(trained_run), "--out", str(out)]) == 0
    assert {p.name for p in out.iterdir()} >= {"handin.ipynb", "handin.py", "handin.pdf", "handin.html", "code.zip"}
    nb = nbformat.read(out / "handin.ipynb", as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(c.execution_count for c in code) and not any(o.output_type == "error" for c in code for o in c.outputs)
    titles = [c.source[3:] for c in nb.cells if c.cell_type == "markdown" and c.source.startswith("## ")]
    assert titles == [title for _, title, _, _ in TASKS]
    assert list(_answers(nb)) == ["munet", "dice scale", "loss curves", "qualitative", "coco", "sam"]
    text = _pdf_text(out / "handin.pdf")
    for cell, output, following in [("setup(SHAPES, COCO)", "first command", "architecture(SHAPES)"),
                                    ("architecture(SHAPES)", "parameters (", "part(SHAPES, 'aspp')"),
                                    ('print("dice_loss:"', "dice_loss: 0.333334  by hand: 0.333333", "Task 4"),
                                    ("part(COCO, 'test metrics')", "Decision rule", "part(COCO, 'training')")]:
        start = text.index(cell)  # each output lies between its code cell and the next one
        assert output in text[start:text.index(following, start)], (cell, output)
    with zipfile.ZipFile(out / "code.zip") as z:
        assert z.namelist() == ["handin.py"] and "part(SHAPES, 'loss curves')" in z.read("handin.py").decode()
    assert "hand in" in capsys.readouterr().out


@pytest.mark.slow
def test_answers_survive_handin_again_after_a_new_sam_compare(grid, trained_run, tmp_path, capsys):
    coco, out = tmp_path / "coco", tmp_path / "handin"
    shutil.copytree(trained_run, coco)
    args = ["handin", "--shapes", str(grid), "--coco", str(coco), "--out", str(out)]
    assert cli.main(args) == 0
    assert "No SAM comparison in" in _pdf_text(out / "handin.pdf")
    nb = nbformat.read(out / "handin.ipynb", as_version=4)
    answers = _answers(nb)
    answers["munet"].source = ANSWER + "mUNet encodes with **skip** connections.\n\n![sketch](attachment:sketch.png)"
    buf = io.BytesIO()
    Image.new("RGB", (30, 30), "blue").save(buf, format="PNG")
    answers["munet"].attachments = {"sketch.png": {"image/png": base64.b64encode(buf.getvalue()).decode()}}
    answers["sam"].source = ANSWER + "SAM's edges are sharper."
    nb.cells.insert(nb.cells.index(answers["sam"]) + 1, nbformat.v4.new_markdown_cell("A note I added."))
    nbformat.write(nb, out / "handin.ipynb")
    before = (out / "handin.ipynb").read_bytes()
    _with_sam(trained_run, tmp_path / "x")  # a SAM comparison appears in the COCO folder
    shutil.copytree(tmp_path / "x" / "coco" / "sam", coco / "sam")
    capsys.readouterr()
    assert cli.main(args) == 0
    assert "handin.ipynb: carried 3 answer(s) and added cell(s)" in capsys.readouterr().out
    assert (out / "handin.previous.ipynb").read_bytes() == before
    again = nbformat.read(out / "handin.ipynb", as_version=4)
    kept = _answers(again)
    assert kept["munet"].source.startswith(ANSWER + "mUNet encodes") and kept["munet"].attachments["sketch.png"]
    assert kept["sam"].source == ANSWER + "SAM's edges are sharper."
    sources = [c.source for c in again.cells]
    assert sources[sources.index(kept["sam"].source) + 1] == "A note I added." and ORPHANS not in "".join(sources)
    text = _pdf_text(out / "handin.pdf")
    assert "mUNet encodes with skip connections." in text and "SAM's edges are sharper." in text
    assert "0.777" in text and "No SAM comparison in `" not in text.split("Section 5")[1].split("part(SHAPES")[0]
    assert (out / "handin_files" / f"cell{sources.index(kept['munet'].source)}-sketch.png").is_file()


@pytest.mark.slow
def test_a_missing_part_is_a_section_naming_its_command(grid, tmp_path):
    out = tmp_path / "handin"
    assert cli.main(["handin", "--shapes", str(grid), "--out", str(out)]) == 0
    text = re.sub(r"\s+", " ", _pdf_text(out / "handin.pdf"))
    assert "No coco folder was given. dlstudio-aspp run --dataset coco --out outputs/coco makes it" in text
    nb = nbformat.read(out / "handin.ipynb", as_version=4)
    assert "coco" in _answers(nb) and all(c.execution_count for c in nb.cells if c.cell_type == "code")


def test_a_folder_that_is_not_there_is_one_line(tmp_path, capsys):
    assert cli.main(["handin", "--coco", str(tmp_path / "nope"), "--out", str(tmp_path / "h")]) == 2
    assert "--coco" in capsys.readouterr().err


@pytest.mark.slow
def test_pdf_only_renders_an_edited_notebook_without_running_it(grid, tmp_path):
    out = tmp_path / "handin"
    assert cli.main(["handin", "--shapes", str(grid), "--out", str(out)]) == 0
    nb = nbformat.read(out / "handin.ipynb", as_version=4)
    _answers(nb)["qualitative"].source = ANSWER + "Edited in Jupyter."
    nb.cells.append(nbformat.v4.new_code_cell("raise SystemExit('this cell must not run')"))
    nbformat.write(nb, out / "handin.ipynb")
    assert cli.main(["handin", "--out", str(out), "--pdf-only"]) == 0
    text = _pdf_text(out / "handin.pdf")
    assert "Edited in Jupyter." in text and "this cell must not run" in text


def test_the_example_script_that_trained_a_run_goes_into_code_zip(trained_run, tmp_path):
    from dlstudio_aspp.handin import example_scripts, write_code_zip

    run = tmp_path / "run"
    shutil.copytree(trained_run, run)
    (tmp_path / "semantic_segmentation_aspp.py").write_text("print('trained')\n")
    card = json.loads((run / "saved_model.json").read_text())
    card["provenance"].update(command="python semantic_segmentation_aspp.py", cwd=str(tmp_path))
    (run / "saved_model.json").write_text(json.dumps(card))
    scripts = example_scripts(str(run), None)
    assert scripts == [tmp_path / "semantic_segmentation_aspp.py"]
    with zipfile.ZipFile(write_code_zip(tmp_path / "code.zip", scripts)) as z:
        assert z.namelist() == ["semantic_segmentation_aspp.py"]
