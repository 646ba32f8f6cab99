import os

import pytest
import torch

from dlstudio_aspp import dlstudio_glue as glue


def test_installed_dlstudio_is_supported_and_munet_resolves():
    DLStudio = glue.load_dlstudio()
    cls = glue.stock_munet_class(DLStudio)
    assert cls is getattr(DLStudio.SemanticSegmentation, "mUNet", None) or cls is getattr(DLStudio.SemanticSegmentation, "mUnet")


def test_old_name_mUnet_resolves():
    class Seg:
        class mUnet:
            pass

    class Fake:
        SemanticSegmentation = Seg

    assert glue.stock_munet_class(Fake) is Seg.mUnet


def test_class_missing_gets_clear_error():
    class Fake:
        class SemanticSegmentation:
            pass

    with pytest.raises(ValueError, match="known to work"):
        glue.stock_munet_class(Fake)


@pytest.mark.parametrize("version", ["1.0.9", "2.2.8", "2.6.0", "3.0"])
def test_unsupported_versions_refused(version):
    with pytest.raises(ValueError, match="2.3.x .* 2.5.x"):
        glue.check_version(version)


@pytest.mark.parametrize("version", ["2.3.6", "2.5.8"])
def test_supported_versions_pass(version):
    glue.check_version(version)


def test_worker_count_respects_cpus():
    cpus = len(os.sched_getaffinity(0))
    assert glue.default_num_workers() <= max(0, cpus - 2)
    assert glue.default_num_workers(64) <= max(0, cpus - 2)
    assert glue.default_num_workers(0) == 0
    with pytest.raises(ValueError, match=">= 0"):
        glue.default_num_workers(-1)


def test_display_saves_png_instead_of_showing(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("plt.show must not be called"))
    DLStudio = glue.load_dlstudio()
    dls = DLStudio(image_size=[8, 8], use_gpu=False)
    glue.save_instead_of_show(dls, tmp_path)
    p1 = dls.display_tensor_as_image(torch.rand(3, 8, 8), "rgb")
    p2 = dls.display_tensor_as_image(torch.rand(8, 8))
    assert p1.is_file() and p2.is_file() and p1 != p2
    assert plt.imread(p1).shape[:2] == (8, 8)
    with pytest.raises(ValueError, match="expected a"):
        dls.display_tensor_as_image(torch.rand(2, 2, 2, 2))


def test_segmenter_redirects_display_when_headless(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    from dlstudio_aspp.segmentation import SemanticSegmentationASPP

    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.setattr(plt, "show", lambda *a, **k: pytest.fail("plt.show must not be called"))
    DLStudio = glue.load_dlstudio()
    dls = DLStudio(image_size=[8, 8], path_saved_model=str(tmp_path / "m"), use_gpu=False)
    SemanticSegmentationASPP(dl_studio=dls, max_num_objects=5)
    assert not (tmp_path / "displays").exists()
    path = dls.display_tensor_as_image(torch.rand(3, 8, 8))
    assert path.parent == tmp_path / "displays" and path.is_file()


def test_setup_py_admits_exactly_the_dlstudio_versions_the_glue_accepts():
    """`pip install -e .` must never pick a DLStudio the glue then refuses (2.6 the day it is released)."""
    import ast
    from pathlib import Path

    from packaging.requirements import Requirement

    from dlstudio_aspp.dlstudio_glue import check_version

    tree = ast.parse((Path(__file__).resolve().parents[1] / "setup.py").read_text())
    requires = next(ast.literal_eval(k.value) for node in ast.walk(tree) if isinstance(node, ast.Call)
                    for k in node.keywords if k.arg == "install_requires")
    spec = next(Requirement(r) for r in requires if r.lower().startswith("dlstudio")).specifier
    for version in ("2.2.9", "2.3.0", "2.3.6", "2.4.9", "2.5.8", "2.5.99", "2.6.0", "2.10.1", "3.0"):
        try:
            check_version(version)
            accepted = True
        except ValueError:
            accepted = False
        assert spec.contains(version) == accepted, version
    assert spec.contains("2.5.8") and not spec.contains("2.6.0")
