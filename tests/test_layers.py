"""The package's import graph: no circle (imports inside functions count), the mask rule at the bottom,
the run record above the data, the command line on top."""
import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "dlstudio_aspp"


def _module(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph() -> dict:
    """module -> the package modules it imports anywhere in its source (top level or inside functions)."""
    modules = {_module(p): p for p in PKG.rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                base = package.split(".")[:len(package.split(".")) - (node.level - 1)] if node.level else []
                target = ".".join(base + ([node.module] if node.module else []))
                found = [target] + [f"{target}.{a.name}" for a in node.names]
            elif isinstance(node, ast.Import):
                found = [a.name for a in node.names]
            else:
                continue
            edges |= {m for m in found if m in modules and m != name and m != "dlstudio_aspp"}
        graph[name] = edges
    return graph


def _reaches(graph, start, goal) -> bool:
    todo, seen = [start], set()
    while todo:
        m = todo.pop()
        for nxt in graph[m] - seen:
            if nxt == goal:
                return True
            seen.add(nxt)
            todo.append(nxt)
    return False


def test_no_import_circle():
    graph = import_graph()
    circles = sorted(m for m in graph if _reaches(graph, m, m))
    assert circles == [], f"modules on an import circle: {circles}"


def test_the_layers():
    g = import_graph()
    assert g["dlstudio_aspp.masks"] <= {"dlstudio_aspp.errors"}  # the mask rule is a leaf
    # options and the closed sets import neither torch nor the package's heavy modules
    assert g["dlstudio_aspp.spec"] <= {"dlstudio_aspp.errors", "dlstudio_aspp.registry", "dlstudio_aspp.recipes",
                                       "dlstudio_aspp.checks"}
    assert g["dlstudio_aspp.checks"] == set()
    assert g["dlstudio_aspp.recipes"] == set()
    assert g["dlstudio_aspp.registry"] <= {"dlstudio_aspp.errors", "dlstudio_aspp.data.wrappers"}
    below_card = [m for m in g if m.startswith("dlstudio_aspp.data") or m in ("dlstudio_aspp.metrics",
                                                                            "dlstudio_aspp.floors", "dlstudio_aspp.sam")]
    assert not [m for m in below_card if _reaches(g, m, "dlstudio_aspp.card")], "data, metrics, floors and sam need " \
        "no run record"
    top = {"dlstudio_aspp.cli", "dlstudio_aspp.commands"}
    assert not [m for m in g if m not in top and g[m] & top], "nothing below the command line imports it"


def test_the_dataset_kind_is_decided_in_the_registry_only():
    """No module but the registry compares a dataset's name or class to decide what to do."""
    import re

    pattern = re.compile(r"""(==|!=)\s*["'](coco|shapes)["']|isinstance\([^)]*(COCOSegmentationDataset|Shapes)""")
    found = [f"{p.relative_to(PKG)}:{n}" for p in PKG.rglob("*.py") if p.name != "registry.py"
             for n, line in enumerate(p.read_text().splitlines(), 1) if pattern.search(line)]
    assert found == []
