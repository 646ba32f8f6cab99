"""A report's Markdown as a self-contained HTML file and an A4 PDF, for handing in.

The Markdown is read once by markdown-it-py (CommonMark with tables, the parser behind
MyST and Jupyter Book) and rendered twice:

- :func:`to_html`: one file, every figure embedded as a ``data:`` URI, readable offline;
- :func:`to_pdf`: A4 pages laid out by ReportLab's Platypus (a pip install: no browser,
  no LaTeX). Text and table cells wrap, a table too wide for the page is set in a smaller
  font and its columns share the width by their content, so no cell is cut off; a
  heading is kept on the page of what follows it; figures are scaled to fit the page.
  The text is set in DejaVu Sans (shipped with matplotlib), so ``±``, ``≥`` and ``×``
  print as themselves.
"""
from __future__ import annotations

import base64
import html
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from . import crash
from .atomic import write_text

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


def _parser():
    from markdown_it import MarkdownIt

    return MarkdownIt("commonmark", {"html": False}).enable("table")


# ---- the document as blocks (what both renderers walk) -----------------------------------------

@dataclass
class Block:
    """One block of the document.

    kind: 'h' (``level``, ``inline``), 'p' (``inline``), 'img' (``src``, ``alt``), 'li'
    (``items``: one inline list per item, ``level`` its nesting), 'table' (``head``: inline
    lists, ``rows``: lists of inline lists), 'code' (``text``; ``alt``: the fence's language,
    'python' for a notebook's code cell, 'output' for its text output), 'hr'. An inline is the list
    of markdown-it inline tokens of that text.
    """
    kind: str
    level: int = 0
    inline: list = field(default_factory=list)
    src: str = ""
    alt: str = ""
    items: list = field(default_factory=list)
    head: list = field(default_factory=list)
    rows: list = field(default_factory=list)
    text: str = ""


def parse(md: str) -> List[Block]:
    """The blocks of a Markdown text, read by markdown-it-py."""
    tokens, blocks, i = _parser().parse(md), [], 0
    depth = 0
    while i < len(tokens):
        t = tokens[i]
        if t.type == "heading_open":
            blocks.append(Block("h", level=int(t.tag[1]), inline=tokens[i + 1].children))
            i += 3
        elif t.type == "paragraph_open" and not t.hidden:
            blocks += _paragraph(tokens[i + 1].children)
            i += 3
        elif t.type in ("bullet_list_open", "ordered_list_open"):
            depth += 1
            i += 1
        elif t.type in ("bullet_list_close", "ordered_list_close"):
            depth -= 1
            i += 1
        elif t.type == "list_item_open":
            j, parts = i + 1, []
            while tokens[j].type not in ("list_item_close", "bullet_list_open", "ordered_list_open"):
                if tokens[j].type == "inline":
                    parts.append(tokens[j].children)
                j += 1
            blocks.append(Block("li", level=depth, items=parts))
            i = j if tokens[j].type != "list_item_close" else j + 1
        elif t.type == "table_open":
            i, block = _table(tokens, i)
            blocks.append(block)
        elif t.type in ("fence", "code_block"):
            blocks.append(Block("code", text=t.content.rstrip("\n"), alt=t.info.strip()))
            i += 1
        elif t.type == "hr":
            blocks.append(Block("hr"))
            i += 1
        else:
            i += 1
    return blocks


def _paragraph(children) -> List[Block]:
    """A paragraph's blocks: its text, with each image as a figure of its own where it stands (several
    figures on consecutive lines are one paragraph in Markdown, and each must reach the page)."""
    blocks, text = [], []
    for c in list(children) + [None]:
        if c is None or c.type == "image":
            if any(t.type not in ("softbreak", "hardbreak") and (t.type != "text" or t.content.strip()) for t in text):
                blocks.append(Block("p", inline=text))
            if c is not None:
                blocks.append(Block("img", src=c.attrGet("src"), alt=c.content))
            text = []
        else:
            text.append(c)
    return blocks


def _table(tokens, i: int) -> Tuple[int, Block]:
    head, rows, row, in_head = [], [], None, False
    while tokens[i].type != "table_close":
        t = tokens[i]
        if t.type == "thead_open":
            in_head = True
        elif t.type == "thead_close":
            in_head = False
        elif t.type == "tr_open":
            row = []
        elif t.type == "tr_close":
            (head.extend if in_head else rows.append)(row)
        elif t.type == "inline":
            row.append(t.children or [])
        i += 1
    return i + 1, Block("table", head=head, rows=rows)


def _runs(inline, bold: bool = False) -> List[Tuple[str, str]]:
    """The text of an inline as a reader sees it, in (text, font) pieces: the fonts the PDF sets them in
    (bold, code in Mono), a line break as a space, an image as its alt text."""
    out = []
    for t in inline or []:
        if t.type in ("strong_open", "strong_close"):
            bold = t.type == "strong_open"
        elif t.type in ("text", "code_inline", "image", "softbreak", "hardbreak"):
            text = " " if t.type in ("softbreak", "hardbreak") else t.content
            out.append((text, "Mono" if t.type == "code_inline" else "Sans-Bold" if bold else "Sans"))
    return out


def plain(inline) -> str:
    """The text of an inline, as a reader sees it (markup removed)."""
    return "".join(text for text, _ in _runs(inline))


def table_cells(md: str) -> List[str]:
    """Every cell of every table in ``md``, as plain text (what a PDF of it must show)."""
    cells = []
    for b in parse(md):
        if b.kind == "table":
            cells += [plain(c) for c in b.head] + [plain(c) for r in b.rows for c in r]
    return cells


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


# ---- PDF -------------------------------------------------------------------------------------------

def _fonts() -> Dict[str, str]:
    """DejaVu Sans and Sans Mono from matplotlib's fonts, registered with ReportLab once."""
    from matplotlib import get_data_path
    from reportlab.lib.fonts import addMapping
    from reportlab.pdfbase import pdfmetrics
    from reportlab.pdfbase.ttfonts import TTFont

    names = {"Sans": "DejaVuSans", "Sans-Bold": "DejaVuSans-Bold", "Sans-Oblique": "DejaVuSans-Oblique",
             "Sans-BoldOblique": "DejaVuSans-BoldOblique", "Mono": "DejaVuSansMono"}
    if "Sans" not in pdfmetrics.getRegisteredFontNames():
        folder = Path(get_data_path()) / "fonts" / "ttf"
        for name, file in names.items():
            pdfmetrics.registerFont(TTFont(name, str(folder / f"{file}.ttf")))
        addMapping("Sans", 0, 0, "Sans")
        addMapping("Sans", 1, 0, "Sans-Bold")
        addMapping("Sans", 0, 1, "Sans-Oblique")
        addMapping("Sans", 1, 1, "Sans-BoldOblique")
    return names


def _markup(inline) -> str:
    """An inline as ReportLab paragraph markup (bold, italics, code, links; text escaped)."""
    out, esc = [], lambda s: html.escape(s, quote=False)  # noqa: E731
    tags = {"strong_open": "<b>", "strong_close": "</b>", "em_open": "<i>", "em_close": "</i>", "link_close": "</link>"}
    for t in inline or []:
        if t.type == "text":
            out.append(esc(t.content))
        elif t.type == "code_inline":
            out.append(f'<font face="Mono">{esc(t.content)}</font>')
        elif t.type in ("softbreak", "hardbreak"):
            out.append(" " if t.type == "softbreak" else "<br/>")
        elif t.type == "link_open":
            out.append(f'<link href="{html.escape(t.attrGet("href") or "")}" color="#1a4fa0">')
        elif t.type in tags:
            out.append(tags[t.type])
    return "".join(out)


def _styles() -> dict:
    from reportlab.lib.styles import ParagraphStyle

    _fonts()
    body = ParagraphStyle("body", fontName="Sans", fontSize=9, leading=12.5, spaceAfter=5)
    return {
        "body": body,
        1: ParagraphStyle("h1", parent=body, fontName="Sans-Bold", fontSize=16, leading=20, spaceBefore=4, spaceAfter=8,
                          keepWithNext=1),
        2: ParagraphStyle("h2", parent=body, fontName="Sans-Bold", fontSize=12.5, leading=16, spaceBefore=10,
                          spaceAfter=5, keepWithNext=1),
        3: ParagraphStyle("h3", parent=body, fontName="Sans-Bold", fontSize=10.5, leading=14, spaceBefore=8,
                          spaceAfter=4, keepWithNext=1),
        "code": ParagraphStyle("code", parent=body, fontName="Mono", fontSize=7.5, leading=9.5, backColor="#f4f4f4",
                               borderPadding=4, spaceBefore=3, spaceAfter=8),
        "mono": ParagraphStyle("mono", parent=body, fontName="Mono", fontSize=7.5, leading=9.5, spaceAfter=0),
        "line numbers": ParagraphStyle("line numbers", parent=body, fontName="Mono", fontSize=7.5, leading=9.5,
                                       textColor="#8a939c", alignment=2, spaceAfter=0),
    }


#: Table font sizes tried in turn until the table's natural width fits the page; the last one wraps.
TABLE_SIZES = (8.0, 7.0, 6.0)
#: What a table cell never breaks inside: a number with its ± spread.
_UNBROKEN = re.compile(r"(\S+) ± (\S+)")


def _unbroken(text: str) -> str:
    return _UNBROKEN.sub("\\1\u00a0±\u00a0\\2", text)


def _column_widths(cells: List[List[List[Tuple[str, str]]]], width: float,
                   size: float) -> Tuple[bool, Optional[List[float]]]:
    """(whether the natural widths fit ``width``, widths that fit by wrapping between words, or None when
    some word (a ``mean ± std`` is one) is wider than its share) for a table's cells, each a list of
    (text, font) runs (:func:`_runs`), measured in the fonts they are set in."""
    from reportlab.pdfbase.pdfmetrics import stringWidth

    pad = 8.0
    n = max(len(r) for r in cells)
    col = lambda k: [r[k] if k < len(r) else [] for r in cells]  # noqa: E731
    natural = [max(sum(stringWidth(text, font, size) for text, font in cell) for cell in col(k)) + pad for k in range(n)]
    if sum(natural) <= width:
        return True, natural
    words = [max((stringWidth(w, font, size) for cell in col(k) for text, font in cell
                  for w in _unbroken(text).split(" ")), default=0) + pad for k in range(n)]
    least = [min(w, nat) for w, nat in zip(words, natural)]
    if sum(least) > width:
        return False, None
    spare = width - sum(least)
    extra = [nat - lo for nat, lo in zip(natural, least)]
    return False, [lo + spare * e / sum(extra) for lo, e in zip(least, extra)]


def _table_layout(cells, width: float) -> Optional[Tuple[float, List[float]]]:
    """(font size, column widths) for the table on a page ``width`` wide: the largest size whose natural
    widths fit, else the largest that fits by wrapping between words; None when none does."""
    wrapped = None
    for size in TABLE_SIZES:
        fits, widths = _column_widths(cells, width, size)
        if fits:
            return size, widths
        if widths is not None and wrapped is None:
            wrapped = size, widths
    return wrapped


def _table_flowable(block: Block, width: float, wide: float) -> list:
    """The table on the page; on a landscape page of its own (``wide``) when a word of a cell would
    otherwise break."""
    from reportlab.lib import colors
    from reportlab.lib.styles import ParagraphStyle
    from reportlab.platypus import LongTable, NextPageTemplate, PageBreak, Paragraph, TableStyle

    cells = [[_runs(c, bold=True) for c in block.head]] + [[_runs(c) for c in r] for r in block.rows]
    layout, around = _table_layout(cells, width), ([], [])
    if layout is None:
        layout = _table_layout(cells, wide) or (TABLE_SIZES[-1], [wide / max(map(len, cells))] * max(map(len, cells)))
        around = [NextPageTemplate("landscape"), PageBreak()], [NextPageTemplate("portrait"), PageBreak()]
    size, widths = layout
    style = ParagraphStyle("cell", fontName="Sans", fontSize=size, leading=size * 1.25, splitLongWords=1)
    head = ParagraphStyle("head", parent=style, fontName="Sans-Bold")
    cell = lambda inline, st: Paragraph(_unbroken(_markup(inline)), st)  # noqa: E731
    data = [[cell(c, head) for c in block.head]]
    data += [[cell(c, style) for c in r] + [""] * (len(block.head) - len(r)) for r in block.rows]
    table = LongTable(data, colWidths=widths, repeatRows=1, hAlign="LEFT")
    table.setStyle(TableStyle([("GRID", (0, 0), (-1, -1), 0.4, colors.HexColor("#b0b0b0")),
                               ("BACKGROUND", (0, 0), (-1, 0), colors.HexColor("#ececec")),
                               ("VALIGN", (0, 0), (-1, -1), "TOP"),
                               ("LEFTPADDING", (0, 0), (-1, -1), 3), ("RIGHTPADDING", (0, 0), (-1, -1), 3),
                               ("TOPPADDING", (0, 0), (-1, -1), 1.5), ("BOTTOMPADDING", (0, 0), (-1, -1), 2)]))
    return [*around[0], table, *around[1]]


#: Lines of code in one box: a longer cell continues in the next box (a box never splits over pages).
BOX_LINES = 60


def _code_flowables(text: str, numbered: bool, width: float) -> list:
    """A notebook's code cell (``numbered``: in boxes, each line with its number) or its text output; a line
    too long for the box continues on the next, unnumbered."""
    from reportlab.lib import colors
    from reportlab.pdfbase.pdfmetrics import stringWidth
    from reportlab.platypus import Preformatted, Table, TableStyle

    styles = _styles()
    room = int((width - 34) / stringWidth("m", "Mono", styles["mono"].fontSize))
    numbers, pieces = [], []
    for k, line in enumerate(text.split("\n"), 1):
        chunks = [line[i:i + room] for i in range(0, len(line), room)] or [""]
        pieces += chunks
        numbers += [str(k)] + [""] * (len(chunks) - 1)
    boxed = TableStyle([("BOX", (0, 0), (-1, -1), 0.6, colors.HexColor("#9aa5b1")),
                        ("BACKGROUND", (0, 0), (-1, -1), colors.HexColor("#f5f7fa")),
                        ("LINEAFTER", (0, 0), (0, -1), 0.4, colors.HexColor("#c8d0d8")),
                        ("VALIGN", (0, 0), (-1, -1), "TOP"), ("LEFTPADDING", (0, 0), (-1, -1), 4)])
    out = []
    for at in range(0, len(pieces), BOX_LINES):
        body = Preformatted("\n".join(pieces[at:at + BOX_LINES]), styles["mono"])
        if numbered:
            out.append(Table([[Preformatted("\n".join(numbers[at:at + BOX_LINES]), styles["line numbers"]), body]],
                             colWidths=[22, width - 22], hAlign="LEFT", style=boxed))
        else:
            out.append(Table([[body]], colWidths=[width], hAlign="LEFT",
                             style=TableStyle([("LEFTPADDING", (0, 0), (-1, -1), 6)])))
    return out


def _image_flowable(path: Path, width: float, height: float):
    from reportlab.platypus import Image as PdfImage

    from PIL import Image

    with Image.open(path) as im:
        w, h = im.size
    scale = min(width / w, height / h)
    return PdfImage(str(path), width=w * scale, height=h * scale, hAlign="LEFT")


def _flowables(blocks: Sequence[Block], base: Path, page: Tuple[float, float, float]) -> list:
    """The blocks as Platypus flowables on pages of ``page`` = (width, height, landscape width); a heading and a
    notebook's code cell are kept on one page with what follows them up to the first table, figure or output."""
    from reportlab.platypus import KeepTogether, PageBreak

    styles, out, group, previous = _styles(), [], None, None
    for b in blocks:
        made = _block_flowables(b, styles, base, page)
        if any(isinstance(f, PageBreak) for f in made):  # a landscape table: never inside a group
            out += ([KeepTogether(group)] if group else []) + made
            group = None
        elif (b.kind == "h" and previous == "h" or _is_cell(b)) and group is not None:
            group += made  # a heading right under a heading, a code cell under its heading: one group
        elif b.kind == "h" or _is_cell(b):  # kept with what follows: a code cell with its output
            if group:
                out.append(KeepTogether(group))
            group = made
        elif group is not None:
            group += made
            if b.kind not in ("p", "li"):
                out.append(KeepTogether(group))
                group = None
        else:
            out += made
        previous = b.kind
    if group:
        out.append(KeepTogether(group))
    return out


def _is_cell(b: Block) -> bool:
    return b.kind == "code" and b.alt == "python"


def _block_flowables(b: Block, styles: dict, base: Path, page: Tuple[float, float, float]) -> list:
    """The flowables of one block (a table and a figure are followed by a little space)."""
    from reportlab.platypus import HRFlowable, Paragraph, Spacer

    width, height, wide = page
    if b.kind == "h":
        return [Paragraph(_markup(b.inline), styles.get(b.level, styles[3]))]
    if b.kind == "p":
        return [Paragraph(_markup(b.inline), styles["body"])]
    if b.kind == "li":
        text = "<br/>".join(_markup(part) for part in b.items)
        return [Paragraph(text, _indented(styles["body"], b.level), bulletText="•" if b.level == 1 else "–")]
    if b.kind == "table":
        return [*_table_flowable(b, width, wide), Spacer(1, 6)]
    if b.kind == "img":
        return [_image_flowable(base / b.src, width, height * 0.85), Spacer(1, 6)]
    if b.kind == "code" and b.alt in ("python", "output"):
        return [*_code_flowables(b.text, b.alt == "python", width), Spacer(1, 4)]
    if b.kind == "code":
        return [Paragraph(html.escape(b.text).replace("\n", "<br/>"), styles["code"])]
    return [HRFlowable(width="100%", thickness=0.5, color="#999999", spaceBefore=4, spaceAfter=6)]  # 'hr'


def _indented(body, level: int):
    from reportlab.lib.styles import ParagraphStyle

    return ParagraphStyle(f"li{level}", parent=body, leftIndent=12 * level, bulletIndent=12 * level - 9, spaceAfter=2,
                          bulletFontName="Sans")


def to_pdf(md: str, base: Path, path: Path, title: str = "") -> Tuple[int, int]:
    """Lay out the Markdown ``md`` on A4 pages into ``path`` (a table too wide to keep its numbers whole on
    a portrait page gets a landscape page); return (pages, images)."""
    from reportlab.lib.pagesizes import A4, landscape
    from reportlab.lib.units import cm
    from reportlab.platypus import BaseDocTemplate, Frame, PageTemplate

    blocks = parse(md)
    margin = 1.6 * cm
    sizes = {"portrait": A4, "landscape": landscape(A4)}
    counts = []

    def page_number(canvas, doc):
        canvas.setFont("Sans", 7.5)
        canvas.drawRightString(doc.pageTemplate.pagesize[0] - margin, margin / 2, f"{title}  ·  page {doc.page}")

    def template(name):
        w, h = sizes[name]
        frame = Frame(margin, margin, w - 2 * margin, h - 2 * margin, id=name, leftPadding=0, rightPadding=0,
                      topPadding=0, bottomPadding=0)
        return PageTemplate(id=name, frames=[frame], pagesize=sizes[name], onPage=page_number)

    def draw(f):
        doc = BaseDocTemplate(f, pagesize=A4, title=title, author="dlstudio-aspp",
                              pageTemplates=[template("portrait"), template("landscape")])
        page = (A4[0] - 2 * margin, A4[1] - 2 * margin, A4[1] - 2 * margin)
        doc.build(_flowables(blocks, base, page))
        counts.append((doc.page, sum(b.kind == "img" for b in blocks)))

    from .atomic import write_with

    write_with(path, draw)
    return counts[0]


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
        to_pdf(md, md_path.parent, md_path.with_suffix(".pdf"), title)
        out["pdf"] = md_path.with_suffix(".pdf")
    return out


__all__ = ["parse", "plain", "table_cells", "to_html", "to_pdf", "write_document", "FORMATS"]
