"""The report of :func:`guidewidgets.localize.wsss.compare`: a text table and the cost / accuracy plot.

Kept apart from the training so that the science module never touches matplotlib.
"""

from __future__ import annotations

__all__ = ["format_table", "plot_cost_accuracy"]


def format_table(rows: list[dict]) -> str:
    """The rows of :func:`compare` as a text table (mIoU in percent)."""
    lines = [f"{'labels':<14}{'s / image':>10}{'mIoU':>8}{'label mIoU':>12}{'train s':>9}"]
    for r in rows:
        lines.append(
            f"{r['kind']:<14}{r['seconds_per_image']:>10.1f}{100 * r['miou']:>8.1f}"
            f"{100 * r['label_miou']:>12.1f}{r['train_seconds']:>9.0f}"
        )
    return "\n".join(lines)


def plot_cost_accuracy(rows: list[dict], path: str) -> None:
    """Save the cost / accuracy plot (annotation seconds per image, log scale, vs held-out mIoU)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # Why here: only the CLI plots; the module stays pyplot-free.

    fig, ax = plt.subplots(figsize=(5, 3.5))
    for r in rows:
        ax.scatter(r["seconds_per_image"], 100 * r["miou"], s=50, label=f"{r['kind']} ({r['seconds_per_image']:g} s)")
    ax.set_xscale("log")
    ax.set_xlabel("annotation time per image (s, log scale; lecture's costs)")
    ax.set_ylabel("held-out mIoU (%)")
    ax.set_title("ShapeSegmenter trained on cheaper labels")
    ax.legend(title="label kind", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
