"""A report's Markdown as an A4 PDF, laid out by ReportLab's Platypus (a pip install: no browser, no LaTeX).

:func:`to_pdf` walks the blocks :func:`dlstudio_aspp.documents.parse` reads. Text and table
cells wrap between words; a table too wide to keep each ``mean ± std`` whole on a portrait
page gets a landscape page of its own; a heading, and a notebook's code cell, are kept on the
page of what follows them; every figure is scaled to fit the page. A notebook's code cell (a
``python`` fence) is set in a box with its line numbers, its text output (an ``output``
fence) unboxed under it. The text is set in DejaVu Sans (shipped with matplotlib), so ``±``,
``≥`` and ``×`` print as themselves.
"""
from __future__ import annotations

import html
import re
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

from .markdown import Block, parse, text_runs

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

    cells = [[text_runs(c, bold=True) for c in block.head]] + [[text_runs(c) for c in r] for r in block.rows]
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


__all__ = ["to_pdf"]
