"""The training loop's hooks: each on its own, on a stand-in for the run (no network needed)."""
import inspect
import signal
import time
from types import SimpleNamespace

import pytest

from dlstudio_aspp import hooks, training
from dlstudio_aspp.errors import NonFiniteLossError
from dlstudio_aspp.stopping import Interrupted


def _run(tmp_path, **kw):
    history = {"iteration": [], "epoch": [], "loss": [], "lr": [], "components": {}, "running": [], "loss_name": "MSE"}
    files = SimpleNamespace(checkpoint=tmp_path / "checkpoint.pt")
    return SimpleNamespace(history=history, card=SimpleNamespace(files=files), own_checkpoint=False, it=3, epoch=0,
                           total=10, validator=None, started=time.perf_counter(), **kw)


def test_hooks_are_called_in_order_and_may_leave_out_events():
    seen = []

    class A:
        def on_step(self, run):
            seen.append(("a", run))

    class B:
        def on_step(self, run):
            seen.append(("b", run))

        def close(self):
            seen.append(("b", "closed"))

    h = hooks.Hooks([A(), object(), B()])
    h("on_step", 1)
    h("on_log", 1, 0, 0.5)  # nobody listens: nothing happens
    h.close()
    assert seen == [("a", 1), ("b", 1), ("b", "closed")]


def test_the_guard_stops_before_the_history_records_a_non_finite_loss(tmp_path):
    run = _run(tmp_path)
    chain = hooks.Hooks([hooks.NonFiniteGuard(), hooks.HistoryRecorder()])
    chain("on_row", run, hooks.Row(1, 1, 1, 0.1, 0.5, [("dice", 0.25)]))
    with pytest.raises(NonFiniteLossError, match=r"MSE loss became nan at iteration 2 \(epoch 1, batch 2\); "
                                                 "this run wrote no checkpoint yet"):
        chain("on_row", run, hooks.Row(2, 1, 2, 0.1, float("nan"), []))
    run.own_checkpoint = True
    with pytest.raises(NonFiniteLossError, match="the last good checkpoint is .*checkpoint.pt"):
        chain("on_row", run, hooks.Row(2, 1, 2, 0.1, float("-inf"), []))
    assert run.history["loss"] == [0.5] and run.history["components"] == {"dice": [0.25]}


def test_stock_lines_and_the_performance_file(tmp_path, capsys):
    run = _run(tmp_path)
    perf = hooks.PerfFile(tmp_path / "performance_numbers_1.txt")
    chain = hooks.Hooks([hooks.HistoryRecorder(), hooks.Progress(run, epochs=2, bar=False), perf])
    chain("on_epoch", run)  # no bar: no blank line in a log file
    chain("on_log", run, 499, 0.12345)
    chain.close()
    assert capsys.readouterr().out == "[epoch=1/2, iter= 500  elapsed_time=  0 secs]   MSE loss: 0.123\n"
    assert run.history["running"] == [[3, 0.12345]]
    assert (tmp_path / "performance_numbers_1.txt").read_text() == "0.123\n"


def test_a_stop_request_saves_then_stops_and_only_then(tmp_path):
    saved = []
    run = _run(tmp_path, save_checkpoint=lambda: saved.append(True))
    stop = hooks.StopOnSignal()
    stop.before_checkpoint(run)
    assert saved == []
    stop.requests.requested = signal.SIGTERM
    with pytest.raises(Interrupted, match="SIGTERM: stopped at iteration 3; checkpoint saved to .*checkpoint.pt"):
        stop.before_checkpoint(run)
    assert saved == [True]


def test_the_loop_takes_no_closures():
    assert list(inspect.signature(training.train_one_epoch).parameters) == ["run", "batches"]
