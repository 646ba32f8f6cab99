"""The student's answers in a generated notebook, carried into the next one so that none is ever lost.

A generated notebook marks each cell in its metadata under ``dlstudio_aspp``:

- ``{"key": "...", "source": digest}`` on a cell the package wrote (a title, a code cell, a
  question): the key is stable from one generation to the next, the digest tells a cell the
  student edited;
- ``{"answer": "<question id>"}`` on the cell under a question where the student writes.

:func:`carry_answers` takes the notebook already on disk and the new one and returns the new
one with, in place:

- every answer cell the student changed, whole (its Markdown, attachments, metadata), under
  the same question;
- every cell the student added, after the cell it followed, and every generated cell the
  student edited, after its new version;
- answers whose question is gone (and added cells whose place is gone) in a closing section
  "Answers without a question", never dropped.

A notebook written before these marks (question and answer in one cell) is read too: its
answer is the text after :data:`ANSWER` under a known question.
"""
from __future__ import annotations

import copy
import hashlib
from typing import Dict, List, Optional, Sequence, Tuple

META = "dlstudio_aspp"
ANSWER = "*Your answer:* "
ORPHANS = "Answers without a question"


def _digest(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def generated(cell, key: str):
    """``cell`` marked as written by the package, under the stable ``key`` (with a digest of its source,
    so that an edit by the student is told from a change in what the package writes)."""
    cell.metadata[META] = {"key": key, "source": _digest(cell.source)}
    return cell


def answer_cell(question_id: str):
    """An empty answer cell for the question ``question_id``."""
    import nbformat.v4 as nbf

    cell = nbf.new_markdown_cell(ANSWER)
    cell.metadata[META] = {"answer": question_id}
    return cell


def _mark(cell) -> dict:
    return dict(cell.get("metadata", {}).get(META, {}))


def _is_blank(cell) -> bool:
    return cell.cell_type == "markdown" and cell.source.strip() == ANSWER.strip() and not cell.get("attachments")


def _legacy_answer(cell, questions: Dict[str, str]):
    """(id, answer cell) for an unmarked cell that holds a known question and a written answer, else None."""
    if cell.cell_type != "markdown" or ANSWER not in cell.source:
        return None
    head, _, text = cell.source.partition(ANSWER)
    qid = next((q for q, words in questions.items() if head.strip().startswith(words.strip())), None)
    if qid is None:
        return None
    new = answer_cell(qid)
    new.source = ANSWER + text
    if cell.get("attachments"):
        new.attachments = copy.deepcopy(cell.attachments)
    return qid, new


def _read_old(old, new_cells, questions) -> Tuple[Dict[str, object], List[Tuple[Optional[str], object]]]:
    """From the old notebook: {question id: changed answer cell} and [(anchor key, cell the student added)].

    An added cell's anchor is the key of the nearest cell above it that the package wrote (an
    answer's anchor is ``answer:<id>``)."""
    by_source = {c.source: _mark(c).get("key") for c in new_cells if _mark(c).get("key")}
    answers, added, anchor = {}, [], None
    for cell in old.cells:
        mark = _mark(cell)
        if "answer" in mark:
            anchor = f"answer:{mark['answer']}"
            if not _is_blank(cell):
                answers[mark["answer"]] = copy.deepcopy(cell)
        elif "key" in mark:
            anchor = mark["key"]
            if mark.get("source") != _digest(cell.source):  # a generated cell the student edited: kept below
                kept = copy.deepcopy(cell)
                del kept.metadata[META]
                added.append((anchor, kept))
        elif cell.source in by_source:  # an unmarked notebook's generated cell, unchanged
            anchor = by_source[cell.source]
        elif (legacy := _legacy_answer(cell, questions)) is not None:
            answers[legacy[0]], anchor = legacy[1], f"answer:{legacy[0]}"
        elif cell.source.strip() or cell.get("attachments"):
            added.append((anchor, copy.deepcopy(cell)))
    return answers, added


def carry_answers(old, new, questions: Dict[str, str], titles: Optional[Dict[str, str]] = None) -> int:
    """Put the student's cells of the notebook ``old`` into the generated notebook ``new`` (in place).

    ``questions``: {question id: its words}, to read notebooks written before the marks and to
    name a question that is gone; ``titles``: {question id: the section it was under}.
    Returns how many answers and added cells were carried."""
    import nbformat.v4 as nbf

    answers, added = _read_old(old, new.cells, questions)
    keys = {_mark(c).get("key") for c in new.cells} | {f"answer:{_mark(c).get('answer')}" for c in new.cells}
    cells, placed = [], set()
    following: Dict[Optional[str], List] = {}
    for anchor, cell in added:
        following.setdefault(anchor if anchor in keys else None, []).append(cell)
    for cell in new.cells:
        qid = _mark(cell).get("answer")
        if qid is not None and qid in answers:
            cell = answers[qid]
            placed.add(qid)
        cells.append(cell)
        anchor = f"answer:{qid}" if qid is not None else _mark(cell).get("key")
        cells += following.pop(anchor, [])
    orphans = [(qid, cell) for qid, cell in answers.items() if qid not in placed]
    left = following.pop(None, [])
    if orphans or left:
        cells.append(generated(nbf.new_markdown_cell(
            f"## {ORPHANS}\n\nThese answers and cells were in this notebook before it was generated again, under "
            "questions or sections it no longer has. They are kept here; move them where they belong."), "orphans"))
        for qid, cell in orphans:
            where = (titles or {}).get(qid, qid)
            cells.append(generated(nbf.new_markdown_cell(f"*Written under “{where}”:* {questions.get(qid, '')}"),
                                   f"orphan:{qid}"))
            cells.append(cell)
        cells += left
    new.cells = cells
    return len(answers) + len(added)


def answer_ids(nb) -> Sequence[str]:
    """The question ids of the answer cells in ``nb``, in order."""
    return [m["answer"] for m in map(_mark, nb.cells) if "answer" in m]


__all__ = ["ANSWER", "META", "ORPHANS", "answer_cell", "answer_ids", "carry_answers", "generated"]
