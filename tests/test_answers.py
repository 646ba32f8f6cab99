"""The student's answers survive a notebook generated again: by id, with attachments, never dropped."""
import base64

import nbformat
import nbformat.v4 as nbf

from dlstudio_aspp.answers import ANSWER, ORPHANS, answer_cell, answer_ids, carry_answers, generated

QUESTIONS = {"a": "**Question.** First?", "b": "**Question.** Second?", "gone": "**Question.** Old one?"}
PNG = base64.b64encode(bytes.fromhex("89504e470d0a1a0a")).decode()


def _notebook(qids, extra_code="show(1)"):
    cells = [generated(nbf.new_markdown_cell("# Report"), "intro")]
    for q in qids:
        cells += [generated(nbf.new_markdown_cell(f"## {q}"), f"title:{q}"),
                  generated(nbf.new_code_cell(f"{extra_code}  # {q}"), f"code:{q}"),
                  generated(nbf.new_markdown_cell(QUESTIONS[q]), f"question:{q}"), answer_cell(q)]
    return nbf.new_notebook(cells=cells)


def _answer(nb, qid):
    return next(c for c in nb.cells if c.metadata.get("dlstudio_aspp", {}).get("answer") == qid)


def _round_trip(nb):
    return nbformat.reads(nbformat.writes(nb), as_version=4)  # as on disk


def test_answers_with_markdown_and_an_image_are_carried_by_id():
    old = _notebook(["a", "b"])
    _answer(old, "a").source = ANSWER + "Dice **wins** here:\n\n| x | y |\n|---|---|\n| 1 | 2 |\n\n![plot](attachment:p.png)"
    _answer(old, "a").attachments = {"p.png": {"image/png": PNG}}
    _answer(old, "b").source = ANSWER + "Second answer."
    new = _notebook(["b", "a"], extra_code="show(2)")  # another order, other code
    assert carry_answers(_round_trip(old), new, QUESTIONS) == 2
    assert _answer(new, "a").source.endswith("![plot](attachment:p.png)") and _answer(new, "a").attachments["p.png"]
    assert _answer(new, "b").source == ANSWER + "Second answer."
    assert answer_ids(new) == ["b", "a"] and ORPHANS not in "".join(c.source for c in new.cells)
    assert all("show(2)" in c.source for c in new.cells if c.cell_type == "code")


def test_an_answer_whose_question_is_gone_is_kept_at_the_end():
    old = _notebook(["a", "gone"])
    _answer(old, "gone").source = ANSWER + "Still mine."
    new = _notebook(["a"])
    assert carry_answers(_round_trip(old), new, QUESTIONS, {"gone": "Old section"}) == 1
    sources = [c.source for c in new.cells]
    at = next(k for k, s in enumerate(sources) if s.startswith(f"## {ORPHANS}"))
    assert "Old section" in sources[at + 1] and sources[at + 2] == ANSWER + "Still mine."
    again = _notebook(["a", "gone"])  # the question comes back: the answer returns under it
    assert carry_answers(_round_trip(new), again, QUESTIONS) == 1
    assert _answer(again, "gone").source == ANSWER + "Still mine." and ORPHANS not in "".join(c.source for c in again.cells)


def test_cells_the_student_added_or_edited_stay_where_they_were():
    old = _notebook(["a", "b"])
    at = old.cells.index(_answer(old, "a"))
    old.cells.insert(at + 1, nbf.new_code_cell("my_extra_plot()"))
    code_b = next(c for c in old.cells if c.metadata.get("dlstudio_aspp", {}).get("key") == "code:b")
    code_b.source = "show(1)  # b, with my change"
    new = _notebook(["a", "b"])
    assert carry_answers(_round_trip(old), new, QUESTIONS) == 2
    sources = [c.source for c in new.cells]
    assert sources[sources.index(ANSWER) + 1] == "my_extra_plot()"
    assert sources[sources.index("show(1)  # b") + 1] == "show(1)  # b, with my change"


def test_blank_answers_are_not_counted_and_unmarked_notebooks_are_read():
    assert carry_answers(_round_trip(_notebook(["a"])), _notebook(["a"]), QUESTIONS) == 0
    legacy = nbf.new_notebook(cells=[nbf.new_markdown_cell("## a"), nbf.new_code_cell("show(1)  # a"),
                                     nbf.new_markdown_cell(f"{QUESTIONS['a']}\n\n{ANSWER}Written before the marks.")])
    new = _notebook(["a"])
    assert carry_answers(_round_trip(legacy), new, QUESTIONS) == 1
    assert _answer(new, "a").source == ANSWER + "Written before the marks."
    assert [c.source for c in new.cells].count("show(1)  # a") == 1  # the unchanged generated cell is not doubled
