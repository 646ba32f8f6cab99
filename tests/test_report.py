import pytest

from dlstudio_aspp.report import make_report, running_mean


def test_report_needs_runs(tmp_path):
    with pytest.raises(FileNotFoundError, match="experiments"):
        make_report(tmp_path)


def test_running_mean():
    assert running_mean([1, 3, 5, 7], 2).tolist() == [1, 2, 4, 6]
    assert running_mean([4.0], 50).tolist() == [4.0]
