"""Where a run's files are: the run folder's layout, apart from the run's record (:class:`~.card.RunCard`).

A run is the file ``path_saved_model`` (the weights, as stock DLStudio saves them) and its siblings;
:class:`RunFiles` names them all and reads none of them. The list is in :mod:`dlstudio_aspp.card`'s
docstring."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List

#: The weights file's name in a run folder (DLStudio's ``path_saved_model`` there).
WEIGHTS_NAME = "saved_model"


@dataclass(frozen=True)
class RunFiles:
    """The files of one run, around its weights file ``weights``."""

    weights: Path

    def __post_init__(self) -> None:
        object.__setattr__(self, "weights", Path(self.weights))

    @property
    def folder(self) -> Path:
        return self.weights.parent

    def has_card(self) -> bool:
        """Whether the folder holds a run's record (its card), finished or not."""
        return self.file.is_file()

    # One property per file, on purpose: these lines are the layout this class exists to name.
    @classmethod
    def at(cls, folder) -> "RunFiles":
        """The files of the run folder ``folder`` (its weights named ``saved_model``)."""
        return cls(Path(folder) / WEIGHTS_NAME)

    def _sibling(self, suffix: str) -> Path:
        return self.weights.with_name(self.weights.name + suffix)

    @staticmethod
    def stock_perf_file(epochs: int) -> str:
        """Where stock DLStudio writes its running averages: the working directory."""
        return f"performance_numbers_{epochs}.txt"

    @property
    def perf_file(self) -> Path:
        return self.folder / "performance_numbers.txt"

    @property
    def samples_file(self) -> Path:
        return self.folder / "samples.npz"

    @property
    def tensorboard_dir(self) -> Path:
        return self.folder / "tensorboard"

    @property
    def summary_file(self) -> Path:
        return self.folder / "summary.json"

    def own_files(self) -> List[Path]:
        """Every file of this run that exists (weights, card, checkpoint, history, metrics, ...)."""
        names = [self.weights, self.file, self.checkpoint, self.previous_checkpoint, self.history_json,
                 self.history_csv, self.metrics_file, self.image_counts_file, self.test_grid, self.perf_file,
                 self.samples_file, self.summary_file]
        return [p for p in names if p.exists()]

    @property
    def file(self) -> Path:
        return self._sibling(".json")

    @property
    def checkpoint(self) -> Path:
        return self._sibling(".ckpt")

    @property
    def previous_checkpoint(self) -> Path:
        """The checkpoint before the newest, kept until the newest is durable (see :mod:`.checkpoint`)."""
        return self._sibling(".ckpt.prev")

    @property
    def history_json(self) -> Path:
        return self._sibling(".history.json")

    @property
    def history_csv(self) -> Path:
        return self._sibling(".history.csv")

    @property
    def metrics_file(self) -> Path:
        return self._sibling(".metrics.json")

    @property
    def image_counts_file(self) -> Path:
        """(N, C, 3) tp, fp, fn of every test image, in test order: what ``compare`` pairs two runs on."""
        return self._sibling(".image_counts.npy")

    @property
    def test_grid(self) -> Path:
        return self._sibling(".test_grid.png")
