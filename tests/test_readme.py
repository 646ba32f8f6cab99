"""The README and docs/ are a guide that works from a fresh clone: every command parses, every link resolves,
no path leaves the repository."""
import re
import shlex
from pathlib import Path

import pytest

from dlstudio_aspp import cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _code_lines(text: str):
    inside = False
    for line in text.splitlines():
        if line.strip().startswith("```"):
            inside = not inside
        elif inside:
            yield line.strip()


def _commands():
    for doc in DOCS:
        for line in _code_lines(doc.read_text()):
            for part in line.split("  #")[0].split("&&"):
                part = part.strip()
                if part.startswith("dlstudio-aspp "):
                    yield doc.name, part


COMMANDS = sorted(set(_commands()))


def test_the_guide_has_commands():
    assert len(COMMANDS) >= 10


@pytest.mark.parametrize("doc,command", COMMANDS)
def test_every_documented_command_parses(doc, command):
    argv = shlex.split(command)[1:]
    args = cli.build_parser().parse_args(argv)  # an unknown flag or a bad value exits here
    assert args.command


def _anchors(path) -> set:
    """GitHub's anchors of a markdown file's headings: lower case, punctuation dropped, spaces as '-'."""
    heads = re.findall(r"^#+ (.+)$", path.read_text(), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_resolve_and_stay_inside_the_repository(doc):
    text = doc.read_text()
    for target in re.findall(r"\]\(([^)]+)\)", text):
        if re.match(r"^[a-z]+://", target) or target.startswith("#"):
            continue
        file, _, anchor = target.partition("#")
        path = (doc.parent / file).resolve()
        assert path.is_relative_to(ROOT), f"{doc.name}: {target} points outside the repository"
        assert path.exists(), f"{doc.name}: {target} does not exist"
        if anchor:
            assert anchor in _anchors(path), f"{doc.name}: {target}: no such heading in {file}"
    assert "shared/data" not in text, f"{doc.name} names a folder outside the repository"
