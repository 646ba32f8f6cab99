"""Same seed, same result: a small run (modern and stock recipes) and a small grid, made with today's code, equal
the fingerprints an earlier commit made (tests/reference/small.json, see tests/reference_runs.py): byte for byte on the
CPU that made them, and elsewhere within what floating-point reordering between CPUs moves (losses, weight norms and
metrics to 1e-4), which a one-line change of the recipe exceeds."""
import json
from pathlib import Path

import pytest
import torch

from reference_runs import differences, machine, make

REFERENCE = Path(__file__).parent / "reference" / "small.json"


@pytest.mark.slow
def test_a_small_run_and_grid_equal_the_committed_reference(tmp_path):
    threads = torch.get_num_threads()
    try:
        made = make(tmp_path)
    finally:
        torch.set_num_threads(threads)
    reference = json.loads(REFERENCE.read_text())
    made_on = reference.pop("made_on")
    assert sorted(made) == sorted(reference)
    for name, want in reference.items():
        if machine() == made_on:
            assert made[name] == want, name  # weights' sha256, iterations, metrics and every loss, exactly
        else:
            assert differences(made[name], want) == [], name


def test_the_tolerance_tells_a_change_of_result_from_a_change_of_cpu():
    reference = json.loads(REFERENCE.read_text())
    want = reference["grid/dice+mse-20__aspp-on__seed-0"]
    jitter = dict(want, loss=[v * (1 + 3e-6) for v in want["loss"]],
                  )  # reordering moves the last bits
    assert differences(jitter, want) == []
    # one line of the recipe: the ASPP block switched off (the same seed, data and budget otherwise)
    other = reference["grid/dice+mse-20__aspp-off__seed-0"]
    assert "loss" in differences(other, want)
    lr = dict(want, loss=want["loss"][:1] + [v * 1.01 for v in want["loss"][1:]])  # a 1% change of two losses
    assert differences(lr, want) == ["loss"]
