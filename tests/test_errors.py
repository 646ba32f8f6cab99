"""The error classes and the one-line hook of the stock-like scripts."""
import sys


from dlstudio_aspp import errors


def test_the_error_classes_are_what_callers_catch():
    assert issubclass(errors.MissingFileError, FileNotFoundError) and issubclass(errors.MissingFileError, ValueError)
    assert issubclass(errors.NonFiniteLossError, FloatingPointError) and issubclass(errors.NonFiniteLossError, ValueError)


def test_one_line_errors_prints_a_user_error_and_keeps_other_tracebacks(monkeypatch, capsys):
    seen = []
    monkeypatch.delenv("DLSTUDIO_ASPP_DEBUG", raising=False)
    monkeypatch.setattr(sys, "excepthook", lambda kind, value, tb: seen.append(kind))
    errors.one_line_errors()
    sys.excepthook(errors.MissingFileError, errors.MissingFileError("no data in ./data; run fetch-shapes"), None)
    assert capsys.readouterr().err == "error: no data in ./data; run fetch-shapes\n" and seen == []
    sys.excepthook(RuntimeError, RuntimeError("a bug"), None)
    assert seen == [RuntimeError] and capsys.readouterr().err == ""  # the previous hook: the full traceback


def test_debug_keeps_every_traceback(monkeypatch):
    monkeypatch.setenv("DLSTUDIO_ASPP_DEBUG", "1")
    before = sys.excepthook
    monkeypatch.setattr(sys, "excepthook", before)
    errors.one_line_errors()
    assert sys.excepthook is before and errors.debug()
