"""Markdown read once by markdown-it-py (CommonMark with tables) into the blocks that the HTML and PDF
renderers walk (:class:`Block`), and the text a reader sees of it."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Tuple


def parser():
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
    tokens, blocks, i = parser().parse(md), [], 0
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


def text_runs(inline, bold: bool = False) -> List[Tuple[str, str]]:
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
    return "".join(text for text, _ in text_runs(inline))


def table_cells(md: str) -> List[str]:
    """Every cell of every table in ``md``, as plain text (what a PDF of it must show)."""
    cells = []
    for b in parse(md):
        if b.kind == "table":
            cells += [plain(c) for c in b.head] + [plain(c) for r in b.rows for c in r]
    return cells
