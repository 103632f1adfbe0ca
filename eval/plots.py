"""Plots of a sweep: matplotlib only, from summary rows (no Ray objects)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_curves(summary: list[dict[str, Any]], threshold: float, path: Path, title: str = "") -> Path:
    """Eval attack rate and train desired rate vs step, one line per (LR, seed); symlog x so step 0 shows."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax_eval, ax_train) = plt.subplots(1, 2, figsize=(11, 4.2), sharex=True)
    lrs = sorted({row["lr"] for row in summary})
    cmap = plt.get_cmap("viridis")
    for row in sorted(summary, key=lambda r: (r["lr"], r["seed"])):
        color = cmap(lrs.index(row["lr"]) / max(1, len(lrs) - 1))
        label = f"lr={row['lr']:.3g}" + (f" seed={row['seed']}" if len({r['seed'] for r in summary}) > 1 else "")
        for ax, key in ((ax_eval, "eval_curve"), (ax_train, "train_desired_curve")):
            pts = row[key]
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", ms=3, color=color, label=label)
    ax_eval.axhline(threshold, color="grey", ls="--", lw=1, label=f"threshold {threshold:g}")
    ax_eval.set_title("attack rate on eval prompts")
    ax_train.set_title("desired rate on train prompts")
    for ax in (ax_eval, ax_train):
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(left=0)
        ax.set_xlabel("training step")
        ax.set_ylim(-0.03, 1.03)
        ax.grid(alpha=0.3)
    ax_eval.set_ylabel("rate")
    ax_eval.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
