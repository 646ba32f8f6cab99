"""A report's Markdown as a self-contained HTML file and an A4 PDF, for handing in.

The reports write Markdown (headings, paragraphs, lists, pipe tables, images). This
module reads that subset into blocks once and renders them twice:

- :func:`to_html`: one file, every figure embedded as a ``data:`` URI, readable offline;
- :func:`to_pdf`: A4 pages drawn with matplotlib's PDF backend (no browser, no LaTeX):
  text wraps, tables are set in a fixed-width font, figures are scaled to the page.
"""
from __future__ import annotations

import base64
import html
import re
import textwrap
from pathlib import Path
from typing import List, Sequence, Tuple

from .atomic import write_text

Block = Tuple[str, object]  # ('h', (level, text)) | ('p', text) | ('li', [items]) | ('table', (head, rows)) | ('img', (alt, src))

_IMG = re.compile(r"^!\[([^\]]*)\]\(([^)]+)\)\s*$")
FORMATS = ("md", "html", "pdf")


def key_value_table(title: str, values: dict) -> List[str]:
    """A two-column Markdown table of ``values`` (lists and dicts as JSON)."""
    import json

    rows = [f"| {title} | value |", "|---|---|"]
    return rows + [f"| {k} | {json.dumps(v) if isinstance(v, (list, dict)) else v} |" for k, v in values.items()]


def _cells(line: str) -> List[str]:
    return [c.strip() for c in line.strip().strip("|").split("|")]


def parse(md: str) -> List[Block]:
    """The blocks of a Markdown text (the subset the reports write)."""
    blocks: List[Block] = []
    lines, i, para = md.splitlines(), 0, []

    def end_para():
        if para:
            blocks.append(("p", " ".join(para)))
            para.clear()

    while i < len(lines):
        line = lines[i].rstrip()
        if not line.strip():
            end_para()
        elif line.startswith("#"):
            end_para()
            level = len(line) - len(line.lstrip("#"))
            blocks.append(("h", (level, line[level:].strip())))
        elif _IMG.match(line):
            end_para()
            alt, src = _IMG.match(line).groups()
            blocks.append(("img", (alt, src)))
        elif line.lstrip().startswith("|") and i + 1 < len(lines) and re.match(r"^\s*\|[\s:|-]+\|\s*$", lines[i + 1]):
            end_para()
            head, rows, i = _cells(line), [], i + 2
            while i < len(lines) and lines[i].lstrip().startswith("|"):
                rows.append(_cells(lines[i]))
                i += 1
            blocks.append(("table", (head, rows)))
            continue
        elif re.match(r"^\s*[-*] ", line):
            end_para()
            items = []
            while i < len(lines) and (re.match(r"^\s*[-*] ", lines[i]) or (lines[i].startswith("  ") and items)):
                text = re.sub(r"^\s*[-*] ", "", lines[i]).strip()
                if re.match(r"^\s*[-*] ", lines[i]):
                    items.append(text)
                else:
                    items[-1] += " " + text
                i += 1
            blocks.append(("li", items))
            continue
        else:
            para.append(line.strip())
        i += 1
    end_para()
    return blocks


def _inline_html(text: str) -> str:
    t = html.escape(text, quote=False)
    t = re.sub(r"\*\*(.+?)\*\*", r"<strong>\1</strong>", t)
    t = re.sub(r"`([^`]+)`", r"<code>\1</code>", t)
    t = re.sub(r"(?<![\w*])_(\S(?:.*?\S)?)_(?![\w*])", r"<em>\1</em>", t)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', t)


def _plain(text: str) -> str:
    t = re.sub(r"\*\*(.+?)\*\*", r"\1", text)
    t = re.sub(r"`([^`]+)`", r"\1", t)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r"\1", t)


def _data_uri(path: Path) -> str:
    kind = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}.get(
        path.suffix.lower(), "application/octet-stream")
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


STYLE = ("body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;line-height:1.45}"
         "table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #bbb;padding:.2em .5em}"
         "th{background:#eee}img{max-width:100%}code{background:#f3f3f3;padding:0 .2em}")


def to_html(blocks: Sequence[Block], base: Path, title: str) -> str:
    """One self-contained HTML page; image paths are read relative to ``base`` and embedded."""
    out = [f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
           f"<style>{STYLE}</style></head><body>"]
    for kind, value in blocks:
        if kind == "h":
            level, text = value
            out.append(f"<h{level}>{_inline_html(text)}</h{level}>")
        elif kind == "p":
            out.append(f"<p>{_inline_html(value)}</p>")
        elif kind == "li":
            out.append("<ul>" + "".join(f"<li>{_inline_html(t)}</li>" for t in value) + "</ul>")
        elif kind == "table":
            head, rows = value
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline_html(h)}</th>" for h in head) + "</tr></thead><tbody>"
                       + "".join("<tr>" + "".join(f"<td>{_inline_html(c)}</td>" for c in r) + "</tr>" for r in rows)
                       + "</tbody></table>")
        elif kind == "img":
            alt, src = value
            out.append(f"<p><img alt='{html.escape(alt)}' src='{_data_uri(base / src)}'></p>")
    out.append("</body></html>")
    return "\n".join(out)


class _Pages:
    """A4 pages filled top to bottom with matplotlib; counts the pages and images it draws."""

    W, H, M = 8.27, 11.69, 0.6  # inches: A4, margin

    def __init__(self, pdf) -> None:
        import matplotlib.pyplot as plt

        self.plt, self.pdf, self.fig, self.pages, self.images = plt, pdf, None, 0, 0
        self.new_page()

    def new_page(self) -> None:
        if self.fig is not None:
            self.pdf.savefig(self.fig)
            self.plt.close(self.fig)
        self.fig = self.plt.figure(figsize=(self.W, self.H))
        self.y = self.H - self.M
        self.pages += 1

    def need(self, inches: float) -> None:
        if self.y - inches < self.M and self.y < self.H - self.M:
            self.new_page()

    def text(self, line: str, size: float = 9, weight: str = "normal", family: str = "sans-serif", indent: float = 0):
        height = size * 1.45 / 72
        self.need(height)
        self.fig.text((self.M + indent) / self.W, self.y / self.H, line, fontsize=size, weight=weight, family=family,
                      va="top", ha="left")
        self.y -= height

    def image(self, path: Path) -> None:
        import matplotlib.image as mpimg

        im = mpimg.imread(path)
        width = self.W - 2 * self.M
        height = min(width * im.shape[0] / im.shape[1], self.H - 2 * self.M)
        self.need(height)
        width = height * im.shape[1] / im.shape[0]
        ax = self.fig.add_axes([self.M / self.W, (self.y - height) / self.H, width / self.W, height / self.H])
        ax.imshow(im)
        ax.axis("off")
        self.y -= height + 0.1
        self.images += 1

    def close(self) -> None:
        self.pdf.savefig(self.fig)
        self.plt.close(self.fig)


def _table_lines(head: Sequence[str], rows: Sequence[Sequence[str]], width: int = 118) -> List[str]:
    cols = [head] + [list(r) + [""] * (len(head) - len(r)) for r in rows]
    widths = [max(len(_plain(r[k])) for r in cols) for k in range(len(head))]
    while sum(widths) + 3 * len(widths) > width and max(widths) > 8:
        widths[widths.index(max(widths))] -= 1
    fmt = lambda r: " | ".join(_plain(c)[:w].ljust(w) for c, w in zip(r, widths))  # noqa: E731
    return [fmt(head), "-+-".join("-" * w for w in widths)] + [fmt(r) for r in cols[1:]]


def to_pdf(blocks: Sequence[Block], base: Path, path: Path) -> Tuple[int, int]:
    """Draw the blocks on A4 pages into ``path``; return (pages, images)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.backends.backend_pdf import PdfPages

    def draw(f) -> Tuple[int, int]:
        with PdfPages(f) as pdf:
            pages = _Pages(pdf)
            for kind, value in blocks:
                _draw_block(pages, kind, value, base)
            pages.close()
            return pages.pages, pages.images

    counts: List[Tuple[int, int]] = []
    from .atomic import write_with

    write_with(path, lambda f: counts.append(draw(f)))
    return counts[0]


def _draw_block(pages: _Pages, kind: str, value, base: Path) -> None:
    if kind == "h":
        level, text = value
        pages.y -= 0.1
        pages.text(_plain(text), size={1: 16, 2: 13}.get(level, 11), weight="bold")
    elif kind == "p":
        for line in textwrap.wrap(_plain(value), 100) or [""]:
            pages.text(line)
        pages.y -= 0.06
    elif kind == "li":
        for item in value:
            for k, line in enumerate(textwrap.wrap(_plain(item), 96)):
                pages.text(("• " if k == 0 else "  ") + line, indent=0.1)
        pages.y -= 0.06
    elif kind == "table":
        for line in _table_lines(*value):
            pages.text(line, size=6.5, family="monospace")
        pages.y -= 0.08
    elif kind == "img":
        pages.image(base / value[1])


def write_document(md_path: Path, formats: Sequence[str] = FORMATS) -> dict:
    """Render the Markdown file ``md_path`` as the ``formats`` beside it; return {format: path}."""
    md_path = Path(md_path)
    blocks = parse(md_path.read_text())
    title = next((v[1] for k, v in blocks if k == "h"), md_path.stem)
    out = {"md": md_path} if "md" in formats else {}
    if "html" in formats:
        out["html"] = write_text(md_path.with_suffix(".html"), to_html(blocks, md_path.parent, title))
    if "pdf" in formats:
        to_pdf(blocks, md_path.parent, md_path.with_suffix(".pdf"))
        out["pdf"] = md_path.with_suffix(".pdf")
    return out


__all__ = ["parse", "to_html", "to_pdf", "write_document", "FORMATS"]
