"""``GridFolder``: the one owner of an experiments folder's layout, as :class:`RunCard`
is of a run folder's::

    OUT/grid.json                 the grid's settings (spec, axes, preset), failures, provenance
    OUT/runs/<loss>__aspp-<on|off>__seed-<s>/   one run folder per cell (see RunCard)
    OUT/report.md, OUT/figures/   the report
    OUT/sam/                      sam-compare's outputs for runs of this grid

The experiments, the Ray executor, the report and the command line read and write
these files only through this class.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, List, Optional

from .atomic import relative_path, write_json
from .run_files import RunFiles
from .errors import UserError
from .spec import loss_label


class GridFolder:
    def __init__(self, root) -> None:
        self.root = Path(root)

    # ---- layout: one property per file, on purpose (these lines are the layout) ----
    @property
    def settings_file(self) -> Path:
        return self.root / "grid.json"

    @property
    def runs_dir(self) -> Path:
        return self.root / "runs"

    @property
    def report_file(self) -> Path:
        return self.root / "report.md"

    @property
    def figures_dir(self) -> Path:
        return self.root / "figures"

    @property
    def sam_dir(self) -> Path:
        return self.root / "sam"

    def relative(self, path) -> str:
        """``path`` as the grid's report and notebook name it: relative to the grid's folder."""
        return relative_path(path, self.root)

    @staticmethod
    def cell_name(loss, aspp: bool, seed) -> str:
        return f"{loss_label(loss)}__aspp-{'on' if aspp else 'off'}__seed-{seed}"

    def run_folder(self, name: str) -> Path:
        return self.runs_dir / name

    def run_files(self, name: str) -> RunFiles:
        """The files of run ``name``."""
        return RunFiles.at(self.run_folder(name))

    @classmethod
    def of_run(cls, run_folder) -> Optional["GridFolder"]:
        """The grid a run folder belongs to, if it is ``<grid>/runs/<name>``."""
        root = Path(run_folder).resolve().parent.parent
        grid = cls(root)
        return grid if grid.settings_file.is_file() else None

    # ---- state ----
    def exists(self) -> bool:
        return self.settings_file.is_file()

    def is_finished(self, name: str) -> bool:
        return self.run_files(name).summary_file.is_file()

    def has_started_runs(self) -> bool:
        return any(self.run_files(f.name).own_files() for f in self.runs_dir.glob("*") if f.is_dir())

    def finished_names(self) -> List[str]:
        return sorted(f.name for f in self.runs_dir.glob("*") if f.is_dir() and self.is_finished(f.name))

    def read_summary(self, name: str) -> dict:
        return read_json(self.run_files(name).summary_file)

    def read_settings(self) -> dict:
        return read_json(self.settings_file) if self.exists() else {}

    def write_settings(self, settings: dict) -> None:
        """``grid.json``: the new settings; earlier failures of unfinished runs are kept."""
        old = self.read_settings().get("failed", {})
        self.root.mkdir(parents=True, exist_ok=True)
        write_json(self.settings_file, dict(settings, failed={k: v for k, v in old.items() if not self.is_finished(k)}))

    def failures(self) -> Dict[str, str]:
        return dict(self.read_settings().get("failed", {}))

    def record_failures(self, failed: Dict[str, str]) -> None:
        """Add the runs that failed to ``grid.json``; a run that has since finished leaves the list."""
        data = self.read_settings()
        old = {k: v for k, v in data.get("failed", {}).items() if not self.is_finished(k) and k not in failed}
        data["failed"] = dict(old, **failed)
        write_json(self.settings_file, data)


def read_json(path: Path) -> dict:
    from .errors import MissingFileError

    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        raise MissingFileError(f"{path} is missing; re-run the experiments command to finish that run") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path} is not valid JSON ({exc}); delete it (or that run's folder) and re-run the "
                        "experiments command") from None
