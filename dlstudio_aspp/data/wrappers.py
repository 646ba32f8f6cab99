"""Looking through dataset wrappers (``Subset`` and the like) to the dataset that holds the files
and the label map."""
from __future__ import annotations

from ..masks import mask_values_for


def dataset_chain(dataset):
    """``dataset``, then what it wraps (a ``Subset``'s or any wrapper's ``.dataset``), inward to the base dataset."""
    yield dataset
    while getattr(dataset, "dataset", None) is not None:
        dataset = dataset.dataset
        yield dataset


def innermost_dataset(dataset):
    """The base dataset under any ``Subset`` or wrapper (the one that holds the files and the label map)."""
    *_, base = dataset_chain(dataset)
    return base


def dataset_labels(dataset) -> tuple:
    """(class names, mask values) from a dataset's ``label_map``, sorted by value.

    Wrappers (``Subset``) are looked through; a dataset without ``label_map`` gets no
    names and the stock values for 5 classes.
    """
    label_map = next((m for d in dataset_chain(dataset) if (m := getattr(d, "label_map", None))), None)
    pairs = sorted((label_map or {}).items(), key=lambda kv: kv[1])
    if not pairs:
        return [], mask_values_for(5)
    return [str(k) for k, _ in pairs], [int(v) for _, v in pairs]


def split_summary(dataset) -> dict:
    """Per split, how many images the base dataset holds and why (a built COCO set says; others: {})."""
    return dict(getattr(innermost_dataset(dataset), "split_summary", None) or {})


def validation_pool(dataset) -> list:
    """The indices of ``dataset`` that may be held out for validation: all of them, unless its base
    dataset names its ``validation_candidates()`` (indices are mapped through ``Subset``s)."""
    base = innermost_dataset(dataset)
    rule = getattr(base, "validation_candidates", None)
    if rule is None:
        return list(range(len(dataset)))
    allowed = set(rule())

    def base_index(i: int) -> int:
        for d in dataset_chain(dataset):
            if d is base:
                return i
            i = d.indices[i] if hasattr(d, "indices") else i
        return i

    return [i for i in range(len(dataset)) if base_index(i) in allowed]
