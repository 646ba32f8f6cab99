"""A report's Markdown as a self-contained HTML file and an A4 PDF, for handing in.

The Markdown is read once by markdown-it-py (CommonMark with tables, the parser behind
MyST and Jupyter Book) and rendered twice:

- :func:`to_html`: one file, every figure embedded as a ``data:`` URI, readable offline;
- :func:`dlstudio_aspp.pdf.to_pdf`: A4 pages laid out by ReportLab (:mod:`dlstudio_aspp.pdf`).
"""
from __future__ import annotations

import base64
import html
from pathlib import Path
from typing import List, Sequence

from . import crash
from .atomic import write_text
from .markdown import parse, parser as _parser, plain

FORMATS = ("md", "html", "pdf")
#: What ``report`` and ``experiments`` write: the documents and the executed notebook.
REPORT_FORMATS = (*FORMATS, "ipynb")


def key_value_table(title: str, values: dict, value: str = "value") -> List[str]:
    """A two-column Markdown table of ``values`` (lists and dicts as JSON), headed ``title`` and ``value``."""
    import json

    rows = [f"| {title} | {value} |", "|---|---|"]
    return rows + [f"| {k} | {_cell(json.dumps(v) if isinstance(v, (list, dict)) else v)} |" for k, v in values.items()]


def _cell(value) -> str:
    """A value as one Markdown table cell: pipes escaped, on one line."""
    return str(value).replace("|", "\\|").replace("\n", " ")


# ---- HTML ------------------------------------------------------------------------------------------

def _data_uri(path: Path) -> str:
    kind = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".svg": "image/svg+xml"}.get(
        path.suffix.lower(), "application/octet-stream")
    return f"data:{kind};base64,{base64.b64encode(path.read_bytes()).decode('ascii')}"


STYLE = ("body{font-family:system-ui,sans-serif;max-width:60em;margin:2em auto;padding:0 1em;line-height:1.45}"
         "table{border-collapse:collapse;margin:1em 0;font-size:.9em}td,th{border:1px solid #bbb;padding:.2em .5em}"
         "th{background:#eee}img{max-width:100%}code{background:#f3f3f3;padding:0 .2em}"
         "pre{background:#f6f6f6;padding:.6em;overflow-x:auto;white-space:pre-wrap}"
         "pre:has(code.language-python){background:#f5f7fa;border-left:3px solid #9aa5b1}"
         "pre:has(code.language-output){background:#fff;border:1px dashed #ccc}")


def to_html(md: str, base: Path, title: str) -> str:
    """One self-contained HTML page: markdown-it's rendering, each image read relative to ``base`` and embedded."""
    parser = _parser()
    tokens = parser.parse(md)
    for t in tokens:
        for child in t.children or []:
            if child.type == "image" and (base / child.attrGet("src")).is_file():
                child.attrSet("src", _data_uri(base / child.attrGet("src")))
    body = parser.renderer.render(tokens, parser.options, {})
    return (f"<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body>\n{body}</body></html>\n")


def write_document(md_path: Path, formats: Sequence[str] = FORMATS) -> dict:
    """Render the Markdown file ``md_path`` as the ``formats`` beside it; return {format: path}."""
    md_path = Path(md_path)
    md = md_path.read_text()
    title = next((plain(b.inline) for b in parse(md) if b.kind == "h"), md_path.stem)
    out = {"md": md_path} if "md" in formats else {}
    if "html" in formats:
        out["html"] = write_text(md_path.with_suffix(".html"), to_html(md, md_path.parent, title))
        crash.point("report-writing")
    if "pdf" in formats:
        from .pdf import to_pdf

        to_pdf(md, md_path.parent, md_path.with_suffix(".pdf"), title)
        out["pdf"] = md_path.with_suffix(".pdf")
    return out


__all__ = ["key_value_table", "to_html", "write_document", "FORMATS", "REPORT_FORMATS"]
