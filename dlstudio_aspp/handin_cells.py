"""The cells of ``handin.ipynb``, in the homework's order (:mod:`dlstudio_aspp.handin` writes them).

Each task is a Markdown title, short code cells that call :mod:`dlstudio_aspp.handin` on the
student's folders, and the homework's question with an answer cell whose id survives a
regeneration (:mod:`dlstudio_aspp.answers`).
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

from .answers import generated
from .notebook import question_cells

#: The tasks in the homework's order: (key, title, [code lines], question id or None).
TASKS: List[Tuple[str, str, Sequence[str], Optional[str]]] = [
    ("setup", "Setup: what was run, on what machine, for how long", ["setup(SHAPES, COCO)"], None),
    ("task1", "Task 1: ASPP at the mUNet bottleneck",
     ["architecture(SHAPES)", "part(SHAPES, 'aspp')", "part(SHAPES, 'what aspp does')"], "munet"),
    ("task23", "Tasks 2-3: the Dice loss", ["DICE_CHECK"], None),
    ("task4", "Task 4: the scale factor of Dice+MSE", ["part(SHAPES, 'dice scale')"], "dice scale"),
    ("task5", "Task 5: best- and worst-case loss curves per loss",
     ["part(SHAPES, 'loss curves')", "part(SHAPES, 'test metrics')"], "loss curves"),
    ("task6", "Task 6: qualitative results", ["part(SHAPES, 'qualitative')"], "qualitative"),
    ("coco", "Section 4: MS-COCO",
     ["part(COCO, 'data')", "part(COCO, 'test metrics')", "part(COCO, 'training')", "part(COCO, 'test images')"], "coco"),
    ("sam", "Section 5: SAM against mUNet", ["part(SHAPES, 'sam')", "part(COCO, 'sam')"], "sam"),
    ("appendix", "Appendix: every command and how it was made",
     ["part(SHAPES, 'provenance')", "part(COCO, 'appendix')"], None),
]

#: The worked check of Tasks 2-3: the loss's code, then its value on a 2x2 example against the formula by hand.
DICE_CHECK = '''import inspect

import torch

from dlstudio_aspp.losses import dice_loss, dice_per_channel

print(inspect.getsource(dice_per_channel))
pred = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]]])    # (B, C, H, W) = (1, 1, 2, 2)
target = torch.tensor([[[[1.0, 0.0], [0.0, 0.0]]]])
# by hand, the homework's formula (smooth=0): num = 1, den = (1 + 1) + 1 = 3, dice = 2 * 1 / 3, loss = 1 - 2/3
print("dice_loss:", round(float(dice_loss(pred, target, smooth=0)), 6), " by hand:", round(1 - 2 / 3, 6))'''

INTRO = ("# The homework\n\nThis notebook assembles the Shapes experiments, the COCO run and the SAM comparison, in "
         "the homework's order. Each code cell reads the folders named below through `dlstudio_aspp.handin` and "
         "shows its tables and figures right under it. Write your answers under each question; `dlstudio-aspp "
         "handin` run again keeps them (and keeps the previous notebook as `handin.previous.ipynb`). Hand in "
         "`handin.pdf` and `code.zip`.")


def _setup_code(shapes: Optional[str], coco: Optional[str]) -> str:
    return ("from dlstudio_aspp.handin import Part, architecture, part, setup\n\n"
            f"SHAPES = Part('shapes', {shapes!r})  # the Shapes experiments folder, relative to this notebook\n"
            f"COCO = Part('coco', {coco!r})  # the COCO run (or experiments) folder")


def cells(shapes: Optional[str], coco: Optional[str]) -> List:
    """The notebook's cells for the folders ``shapes`` and ``coco`` (paths relative to the notebook, or None)."""
    import nbformat.v4 as nbf

    out = [generated(nbf.new_markdown_cell(INTRO), "intro"),
           generated(nbf.new_code_cell(_setup_code(shapes, coco)), "setup code")]
    for key, title, code, question in TASKS:
        out.append(generated(nbf.new_markdown_cell(f"## {title}"), f"title:{key}"))
        for k, line in enumerate(code):
            out.append(generated(nbf.new_code_cell(DICE_CHECK if line == "DICE_CHECK" else line), f"code:{key}:{k}"))
        if question:
            out += question_cells(question)
    return out


__all__ = ["TASKS", "cells"]
