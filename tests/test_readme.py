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


def test_every_stated_duration_is_a_declared_measured_cost():
    """A duration printed in help, a docstring or the README is one measured, declared once as a Cost (a recipe's
    or a preset's); the texts read it from there, or state the same figure."""
    from dlstudio_aspp.experiments import PRESET_LIST
    from dlstudio_aspp.recipes import COCO_COST, RECIPE_LIST

    costs = [r.cost for r in RECIPE_LIST if r.cost] + [p.cost for p in PRESET_LIST if p.cost]
    declared = {c.short() for c in costs}
    assert all(c.commit and c.date and c.evidence in (ROOT / "benchmarks" / "RESULTS.md").read_text() for c in costs)
    texts = [*DOCS, ROOT / "examples" / "semantic_segmentation_coco.py", *sorted((ROOT / "dlstudio_aspp").glob("*.py"))]
    stated = {(p.name, " ".join(m.split())) for p in texts
              for m in re.findall(r"about \d+\s+minutes\s+on\s+(?:2 CPU cores|one CPU core)", p.read_text())}
    assert stated and all(words in declared for _, words in stated), sorted((n, w) for n, w in stated if w not in declared)
    run_help = cli.build_parser()._subparsers._group_actions[0].choices["run"].format_help()
    assert COCO_COST.short() in " ".join(run_help.split())


def test_no_module_is_over_450_lines_and_no_function_over_60():
    """The package stays readable: a module reads in one sitting, a function at once."""
    import ast

    long_modules, long_functions = [], []
    for path in sorted((ROOT / "dlstudio_aspp").rglob("*.py")):
        text = path.read_text()
        if text.count("\n") > 450:
            long_modules.append((path.name, text.count("\n")))
        for node in ast.walk(ast.parse(text)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 > 60:
                long_functions.append((path.name, node.name, node.end_lineno - node.lineno + 1))
    assert not long_modules and not long_functions, (long_modules, long_functions)
