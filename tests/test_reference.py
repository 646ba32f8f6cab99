"""Same seed, same bytes: a small run (modern and stock recipes) and a small grid, made with today's code, equal
the fingerprints an earlier commit made (tests/reference/small.json, see tests/reference_runs.py)."""
import json
from pathlib import Path

import pytest
import torch

from reference_runs import make

REFERENCE = Path(__file__).parent / "reference" / "small.json"


@pytest.mark.slow
def test_a_small_run_and_grid_equal_the_committed_reference(tmp_path):
    threads = torch.get_num_threads()
    try:
        made = make(tmp_path)
    finally:
        torch.set_num_threads(threads)
    reference = json.loads(REFERENCE.read_text())
    assert sorted(made) == sorted(reference)
    for name, want in reference.items():
        assert made[name] == want, name  # weights' sha256, iterations, metrics and every loss, exactly
