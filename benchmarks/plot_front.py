"""Person IoU against training minutes: the time-to-accuracy front of benchmarks/front.csv.

Usage: python benchmarks/plot_front.py [--csv benchmarks/front.csv] [--out benchmarks/front.png]

Each row of the CSV is one `dlstudio-aspp run --dataset coco` (its command and section in
RESULTS.md). Its minutes are measured ones where the run had the 2 cores alone, else the
released default's measured 36.6 minutes scaled by the step cost (bench_front.py) and the
iterations. The plot draws each point with its 95% interval over the test images, the
front (the best IoU reached at or below each number of minutes), the floors and the target.
"""
import argparse
import csv
from pathlib import Path

HERE = Path(__file__).resolve().parent
#: Floors on coco_person/val2017 at 128x128 (every pixel a person, the best fixed mask) and the issue's target.
FLOORS = {"every pixel": 0.299, "fixed mask": 0.382}  # (0.381 on the set built from both folders)
TARGET = 0.58


def read_points(path: Path):
    """The CSV's rows with numbers as floats (an empty interval stays None)."""
    rows = []
    for row in csv.DictReader(path.open()):
        num = lambda k: float(row[k]) if row[k] else None  # noqa: E731
        rows.append(dict(row, minutes=num("training minutes on 2 cores"), iou=num("person IoU"),
                         low=num("low"), high=num("high"), depth=int(row["depth"]), size=int(row["size"])))
    return rows


def front(points):
    """The points that no faster point beats: (minutes, IoU) pairs, by minutes."""
    best, out = -1.0, []
    for p in sorted(points, key=lambda p: (p["minutes"], -p["iou"])):
        if p["iou"] > best:
            best = p["iou"]
            out.append((p["minutes"], p["iou"]))
    return out


def plot(points, out: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {4: "tab:blue", 8: "tab:orange", 16: "tab:green"}
    markers = {64: "v", 96: "s", 128: "o"}
    fig, ax = plt.subplots(figsize=(11, 4.5))
    fig.subplots_adjust(right=0.64)
    for number, p in enumerate(points, 1):
        err = None if p["low"] is None else [[p["iou"] - p["low"]], [p["high"] - p["iou"]]]
        ax.errorbar(p["minutes"], p["iou"], yerr=err, fmt=markers.get(p["size"], "D"), color=colours.get(p["depth"], "k"),
                    capsize=3, label=f"depth {p['depth']}, {p['size']}x{p['size']}")
        near = sum(abs(q["minutes"] - p["minutes"]) < 1 and abs(q["iou"] - p["iou"]) < 0.01 for q in points[:number - 1])
        ax.annotate(str(number), (p["minutes"], p["iou"]), textcoords="offset points", fontsize=7,
                    xytext=(5 + 10 * near, 4 if number % 2 else -10))  # one x: above and below; one spot: side by side
    key = "\n".join(f"{n}: {p['point']} ({p['iterations']} it)" for n, p in enumerate(points, 1))
    fig.text(0.66, 0.5, key, fontsize=7, va="center", family="monospace")
    ax.set_xlim(min(p["minutes"] for p in points) * 0.8, max(p["minutes"] for p in points) * 1.15)
    xs, ys = zip(*front(points))
    ax.step(list(xs) + [ax.get_xlim()[1]], list(ys) + [ys[-1]], where="post", color="grey", linestyle=":", label="front (best so far)")
    for name, y in FLOORS.items():
        ax.axhline(y, color="grey", linewidth=0.8)
        ax.text(ax.get_xlim()[0], y + 0.004, f"floor: {name}", fontsize=7, color="grey")
    ax.axhline(TARGET, color="red", linestyle="--", linewidth=0.8)
    ax.text(ax.get_xlim()[0], TARGET + 0.004, f"target {TARGET}", fontsize=7, color="red")
    handles, labels = ax.get_legend_handles_labels()
    unique = dict(zip(labels, handles))
    ax.legend(unique.values(), unique.keys(), fontsize=7, loc="lower right")
    ax.set_xlabel("training minutes on the 2 CPU cores")
    ax.set_ylabel("person IoU on coco_person/val2017 (95% interval)")
    ax.set_title("COCO person: IoU against training minutes (seed 0 unless named)", fontsize=10)
    fig.savefig(out, dpi=120)
    plt.close(fig)
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--csv", default=str(HERE / "front.csv"))
    ap.add_argument("--out", default=str(HERE / "front.png"))
    args = ap.parse_args()
    points = [p for p in read_points(Path(args.csv)) if p["minutes"] is not None and p["iou"] is not None]
    print(plot(points, Path(args.out)))
    for minutes, iou in front(points):
        print(f"front: {minutes:.1f} min -> {iou:.3f}")


if __name__ == "__main__":
    main()
