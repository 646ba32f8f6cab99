"""``dlstudio-aspp explain RUN``: what the ASPP does inside a trained run, measured.

For the first ``images`` test images of the run (the same images for every number):

- the effective receptive field (:mod:`dlstudio_aspp.receptive`) of the centre pixel and of a pixel near the
  top-left corner: the mean map over the images, each image's 90%-mass radius and their mean with a 95%
  bootstrap interval, the share of the mass inside the theoretical field of the convolutions, and that field
  (its map in the image, and its side with no border in the way);
- with ASPP on, each branch switched off in turn (:mod:`dlstudio_aspp.ablation`): the change in mIoU and in
  each class's IoU with paired bootstrap intervals, and the share of each branch's taps that read padding at
  the run's bottleneck.

Written into ``RUN/explain/``: ``explain.json`` (every number), ``fields.npz`` (the mean maps and the
theoretical fields), ``receptive_field.png``, ``branches.png`` (ASPP on) and ``explain.md``. For an
experiments folder every finished run is explained; the reports' section "What ASPP does"
(:mod:`dlstudio_aspp.explain_report`) reads these files.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Tuple

import numpy as np
import torch

from .ablation import ablate, branch_names, branch_rates, padding_share
from .atomic import write_json, write_text, write_with
from .card import RunCard
from .explain_report import DEFAULT_IMAGES, explain_dir
from .receptive import MASS_SHARE, effective_fields, field_side, mass_radius, theoretical_field

BATCH = 8


def pixels(image_size) -> Dict[str, Tuple[int, int]]:
    """The output pixels whose fields are measured: the centre, and one near the top-left corner (1/16 of
    the side in from each edge)."""
    h, w = image_size
    return {"centre": (h // 2, w // 2), "corner": (h // 16, w // 16)}


def mean_interval(values, n_boot: int = 1000, seed: int = 0) -> List[float]:
    """95% percentile bootstrap interval of the mean of ``values`` (resampling the values)."""
    v = np.asarray(values, dtype=float)
    if v.size < 2:
        return [float("nan"), float("nan")]
    idx = np.random.default_rng(seed).integers(0, v.size, size=(n_boot, v.size))
    return [float(x) for x in np.percentile(v[idx].mean(1), [2.5, 97.5])]


def test_images(card: RunCard, images: int):
    """The first ``images`` test images of the run's own test set (its spec's data, its test subset)."""
    from .data.open import open_datasets
    from .spec import RunSpec

    _, test = open_datasets(RunSpec.from_json(card.data_spec()))
    return torch.utils.data.Subset(test, range(min(images, len(test))))


def _field(model, loader, card, device, pixel, bar) -> Tuple[torch.Tensor, torch.Tensor]:
    """(mean map (H, W), per-image radii (N,)) of the effective field at ``pixel`` over ``loader``."""
    total, radii = None, []
    for batch in loader:
        x = card.prepare_input(batch["image"].to(device)).float()
        maps = effective_fields(model, x, pixel).cpu()
        total = maps.sum(0) if total is None else total + maps.sum(0)
        radii.append(mass_radius(maps, pixel))
        bar.update(1)
    radii = torch.cat(radii)
    return total / len(radii), radii


def _receptive(model, loader, card, device, bar) -> Tuple[Dict, Dict[str, np.ndarray]]:
    size = tuple(card.image_size)
    side, bounded = field_side(model, size)
    result, arrays = {"mass_share": MASS_SHARE, "theoretical_side": side, "theoretical_bounded": bounded,
                      "image_pool": bool(getattr(model, "aspp", None) is not None and "image pool" in
                                         branch_names(model.aspp))}, {}
    for name, pixel in pixels(size).items():
        mean_map, radii = _field(model, loader, card, device, pixel, bar)
        conv_field = theoretical_field(model, size, pixel, image_pool=False)
        result[name] = {"pixel": list(pixel), "radius_mean": float(radii.mean()),
                        "radius_ci95": mean_interval(radii.numpy()), "radii": [round(float(r), 3) for r in radii],
                        "radius_of_mean_map": float(mass_radius(mean_map, pixel)),
                        "theoretical_pixels": int(conv_field.sum()),
                        "mass_inside_theoretical": float(mean_map[conv_field].sum() / mean_map.sum().clamp_min(1e-30))}
        arrays[f"{name}_mean_map"], arrays[f"{name}_theoretical"] = mean_map.numpy(), conv_field.numpy()
        bar.update(1)
    return result, arrays


def _padding(model, image_size) -> List[Dict]:
    bottleneck = (image_size[0] // 8, image_size[1] // 8)
    return [{"branch": n, "rate": r, "bottleneck": list(bottleneck), "padding_share": padding_share(bottleneck, r)}
            for n, r in zip(branch_names(model.aspp), branch_rates(model.aspp))]


def explain_run(folder, images: int = DEFAULT_IMAGES, device="cpu", progress: bool = True) -> Dict:
    """Measure the run in ``folder`` on its first ``images`` test images and write ``folder/explain/``;
    return what ``explain.json`` holds."""
    from tqdm.auto import tqdm

    from .explain_report import explain_markdown, plot_branches, plot_fields

    card = RunCard.load(folder)
    model = card.load_model(device)
    data = test_images(card, images)
    loader = torch.utils.data.DataLoader(data, batch_size=BATCH, shuffle=False)
    aspp = getattr(model, "aspp", None) is not None
    steps = 2 * (len(loader) + 1) + ((len(model.aspp.convs) + 2) if aspp else 0)
    with tqdm(total=steps, desc=f"explain {Path(folder).name}", unit="step", disable=not progress,
              mininterval=1.0, dynamic_ncols=True) as bar:
        receptive, arrays = _receptive(model, loader, card, device, bar)
        result = {"run": str(Path(folder)), "num_images": len(data), "image_size": list(card.image_size),
                  "aspp": aspp, "rates": card.model.get("aspp_rates") if aspp else None,
                  "class_names": list(card.class_names), "receptive_field": receptive}
        if aspp:
            result["padding"] = _padding(model, card.image_size)
            result["branches"] = ablate(model, loader, card, device, progress=bar)
    out = explain_dir(folder)
    out.mkdir(exist_ok=True)
    write_with(out / "fields.npz", lambda f: np.savez_compressed(f, **arrays))
    result["figures"] = {"receptive_field": plot_fields(result, arrays, out / "receptive_field.png").name}
    if aspp:
        result["figures"]["branches"] = plot_branches(result, out / "branches.png").name
    write_json(out / "explain.json", result)
    write_text(out / "explain.md", explain_markdown(result, lambda name: name) + "\n")
    return result


def explain_grid(root, images: int = DEFAULT_IMAGES, device="cpu", progress: bool = True) -> List[Path]:
    """Explain every finished run of the experiments folder ``root``; return their folders."""
    from .grid import GridFolder

    folder = GridFolder(root)
    names = folder.finished_names()
    for name in names:
        explain_run(folder.run_folder(name), images, device, progress)
    return [folder.run_folder(n) for n in names]
