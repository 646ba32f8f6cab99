"""An executed notebook as a document to hand in: each code cell, then directly under it its output.

:func:`notebook_markdown` turns the notebook into Markdown that :mod:`dlstudio_aspp.documents`
lays out (no LaTeX, no browser, no nbconvert):

- a Markdown cell (the questions, the student's answers) as itself; an image pasted into it
  (``attachment:``) is written to a file beside the document;
- a code cell as a ``python`` fence, which the PDF sets in a box with line numbers;
- its outputs right under it: a figure as an image, a table or text shown as Markdown as
  itself, plain text and errors as an ``output`` fence.

:func:`render_notebook` writes ``NAME.pdf`` and ``NAME.html`` beside ``NAME.ipynb``.
"""
from __future__ import annotations

import base64
import re
from pathlib import Path
from typing import Dict, List, Sequence

from .atomic import write_bytes, write_text
from .errors import MissingFileError, UserError

#: The image types a notebook output or attachment may hold, with their file suffix.
IMAGES = {"image/png": ".png", "image/jpeg": ".jpg"}


def _fence(text: str, info: str) -> str:
    ticks = "`" * max(3, 1 + max((len(m) for m in re.findall(r"`+", text)), default=0))
    return f"{ticks}{info}\n{text.rstrip()}\n{ticks}"


def _image(data: str, name: str, files: Path, folder: Path) -> str:
    """Write a base64 image as ``files/name``; its Markdown, relative to ``folder``."""
    path = write_bytes(files / name, base64.b64decode(data))
    return f"![{name}]({path.relative_to(folder).as_posix()})"


def _output(out, files: Path, folder: Path, name: str) -> str:
    """One output of a code cell as Markdown."""
    if out.output_type == "stream":
        return _fence(out.text, "output")
    if out.output_type == "error":
        return _fence(f"{out.ename}: {out.evalue}", "output")
    data = out.get("data", {})
    kind = next((k for k in IMAGES if k in data), None)
    if kind:
        return _image(data[kind], name + IMAGES[kind], files, folder)
    if "text/markdown" in data:
        return data["text/markdown"]
    return _fence(data.get("text/plain", ""), "output") if data.get("text/plain") else ""


def _markdown_cell(cell, files: Path, folder: Path, k: int) -> str:
    """A Markdown cell, each ``attachment:NAME`` image written to a file and linked."""
    text = cell.source
    for name, bundle in (cell.get("attachments") or {}).items():
        kind = next((t for t in IMAGES if t in bundle), None)
        if kind:
            link = _image(bundle[kind], f"cell{k}-{Path(name).stem}{IMAGES[kind]}", files, folder)
            text = text.replace(f"(attachment:{name})", link[link.index("]") + 1:])
    return text


def notebook_markdown(nb, folder: Path, files: Path) -> str:
    """The notebook ``nb`` as Markdown, code before its output; images written under ``files`` and linked
    relative to ``folder`` (where the document is written)."""
    parts: List[str] = []
    for k, cell in enumerate(nb.cells):
        if cell.cell_type == "markdown":
            parts.append(_markdown_cell(cell, files, folder, k))
        elif cell.cell_type == "code" and cell.source.strip():
            parts.append(_fence(cell.source, "python"))
            parts += [md for j, out in enumerate(cell.get("outputs", []))
                      if (md := _output(out, files, folder, f"cell{k}-out{j}").strip())]
    return "\n\n".join(parts) + "\n"


def read_notebook(path: Path, hint: str = "fix it in Jupyter, or move it away and generate it again"):
    """The notebook at ``path``, or one line saying why it cannot be read and, ``hint``, what to do."""
    import nbformat

    if not path.is_file():
        raise MissingFileError(f"{path} is missing: generate it first (dlstudio-aspp report or handin)")
    try:
        return nbformat.read(str(path), as_version=4)
    except Exception as exc:  # nbformat raises JSON, validation and reader errors alike
        raise UserError(f"{path} cannot be read as a notebook ({type(exc).__name__}: {exc}); {hint}") from None


def render_notebook(path, formats: Sequence[str] = ("pdf", "html")) -> Dict[str, Path]:
    """Write the notebook ``path`` (as it is: nothing is run) as ``formats`` beside it; return {format: path}."""
    from .documents import to_html
    from .markdown import parse, plain
    from .pdf import to_pdf

    path = Path(path)
    nb = read_notebook(path)
    folder = path.parent
    md = notebook_markdown(nb, folder, folder / f"{path.stem}_files")
    title = next((plain(b.inline) for b in parse(md) if b.kind == "h"), path.stem)
    out = {}
    if "html" in formats:
        out["html"] = write_text(path.with_suffix(".html"), to_html(md, folder, title))
    if "pdf" in formats:
        to_pdf(md, folder, path.with_suffix(".pdf"), title)
        out["pdf"] = path.with_suffix(".pdf")
    return out


__all__ = ["notebook_markdown", "read_notebook", "render_notebook"]
