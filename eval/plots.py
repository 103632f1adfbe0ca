"""Plots of a sweep from summary rows or eval.analysis results (no Ray objects). matplotlib's object API only
(Figure, never pyplot): the caller's backend and open figures are left alone, so a notebook survives `report`."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from eval.analysis import LRSummary, TrialAnalysis
    from eval.paired import PairedRow


def plot_curves(summary: list[dict[str, Any]], threshold: float, path: Path, title: str = "") -> Path:
    """Eval attack rate and train desired rate vs step, one line per (LR, seed); symlog x so step 0 shows."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11, 4.2))
    ax_eval, ax_train = fig.subplots(1, 2, sharex=True)
    lrs = sorted({row["lr"] for row in summary})
    cmap = colormaps["viridis"]
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
    return _save(fig, path)


# --- report figures: one panel per setting, built from eval.analysis results -------------------------------------

def _panels(names: Sequence[str], width: float = 5.2, height: float = 4.0) -> tuple[Any, list[Any]]:
    """One axis per setting, at most three per row (readable on a GitHub page)."""
    ncols = min(3, max(1, len(names)))
    nrows = math.ceil(max(1, len(names)) / ncols)
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width * ncols, height * nrows))
    axes = fig.subplots(nrows, ncols, squeeze=False)
    flat = list(axes.ravel())
    for ax in flat[len(names):]:
        ax.set_visible(False)
    return fig, flat[: len(names)]


def _colors(lrs: Sequence[float]) -> dict[float, Any]:
    from matplotlib import colormaps

    cmap = colormaps["viridis"]
    lrs = sorted(lrs)
    return {lr: cmap(0.9 * i / max(1, len(lrs) - 1)) for i, lr in enumerate(lrs)}


def _save(fig: Any, path: Path, rect: tuple[float, float, float, float] | None = None) -> Path:
    """Save a Figure made without pyplot: no global figure list, no backend switch (a notebook's plots survive).
    rect keeps room for a footnote (fig.text) below the axes."""
    fig.tight_layout(rect=rect)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    return path


def _by_setting(items: Sequence[Any]) -> dict[str, list[Any]]:
    out: dict[str, list[Any]] = {}
    for it in items:
        out.setdefault(it.setting, []).append(it)
    return out


def plot_attack_panels(trials: Sequence[TrialAnalysis], thresholds: Mapping[str, float], path: Path) -> Path:
    """Eval attack rate vs step, one line per trial coloured by LR, Wilson bands, the threshold; symlog x from 0."""
    groups = _by_setting([t for t in trials if not t.failed])
    fig, axes = _panels(list(groups))
    many_seeds = any(len({t.seed for t in ts}) > 1 for ts in groups.values())
    for ax, (setting, ts) in zip(axes, groups.items(), strict=True):
        colors = _colors({t.lr for t in ts})
        labelled: set[float] = set()
        for t in sorted(ts, key=lambda t: (t.lr, t.seed)):
            xs = [c["step"] for c in t.curve]
            ax.fill_between(xs, [c["low"] for c in t.curve], [c["high"] for c in t.curve], color=colors[t.lr],
                            alpha=0.08 if many_seeds else 0.18, lw=0)
            ax.plot(xs, [c["rate"] for c in t.curve], marker="o", ms=3, lw=1.2, color=colors[t.lr],
                    label=None if t.lr in labelled else f"lr={t.lr:.3g}")
            labelled.add(t.lr)
        threshold = thresholds.get(setting, 0.5)
        ax.axhline(threshold, color="grey", ls="--", lw=1, label=f"threshold {threshold:g}")
        steps = sorted({s for t in ts for s in (t.scheduled_steps or t.steps)})
        ax.set_xscale("symlog", linthresh=1)
        ax.set_xlim(0, max(steps) * 1.15)
        ax.set_xticks(steps, [str(s) for s in steps], fontsize=8)
        ax.minorticks_off()
        ax.set_ylim(-0.03, 1.03)
        ax.set(title=f"{setting}: attack rate on eval prompts", xlabel="training step (symlog)", ylabel="attack rate")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, title="band: 95% Wilson CI", title_fontsize=7)
    return _save(fig, path)


def _lr_bar(ax: Any, x: int, s: LRSummary, color: Any) -> float:
    """One bar of the LR x steps chart: the interpolated median (or the lower bound, hatched, with an upward arrow
    only: the true value lies strictly above), its error whisker and the median bracket (grey band)."""
    h = s.lr * s.bar_steps
    ax.bar(x, h, color=color, alpha=0.35 if s.median_is_lower_bound else 0.9,
           hatch="//" if s.median_is_lower_bound else None, edgecolor="black", lw=0.8)
    if s.median_is_lower_bound:  # "more than": an upward arrow, never a downward whisker
        top = h * 2.2
        ax.annotate("", xy=(x, top), xytext=(x, h), arrowprops={"arrowstyle": "-|>", "color": "black"})
        label = f"> {h:.3g}"
    else:
        lo = s.lr * s.interp_error_low if s.interp_error_low is not None else h
        hi = s.lr * s.interp_error_high if s.interp_error_high is not None and math.isfinite(s.interp_error_high) else h
        ax.errorbar(x, h, yerr=[[max(0.0, h - lo)], [max(0.0, hi - h)]], color="black", capsize=4, lw=1)
        if s.bracket_low is not None and s.bracket_high is not None and math.isfinite(s.bracket_high):
            ax.vlines(x + 0.3, max(s.lr * s.bracket_low, h * 1e-3), s.lr * s.bracket_high, color="grey", lw=5,
                      alpha=0.7)
        top, label = hi, f"{h:.3g}"
    ax.annotate(f"{label}\n{s.n_converged}/{len(s.seeds)} conv.", (x, top), xytext=(0, 3),
                textcoords="offset points", ha="center", va="bottom", fontsize=7)
    return top


def plot_lr_x_steps(summaries: Sequence[LRSummary], path: Path, error_rule: str = "factor",
                    headlines: Mapping[str, str] | None = None) -> Path:
    """The note's bar chart: LR x median interpolated steps-to-transfer per LR (log y), with the bracket as a grey
    band beside the bar; faded hatched bars are lower bounds (LR x max_steps) with an upward arrow."""
    groups = _by_setting(summaries)
    fig, axes = _panels(list(groups), height=4.6)
    for ax, (setting, ss) in zip(axes, groups.items(), strict=True):
        ss = sorted(ss, key=lambda s: s.lr)
        colors = _colors([s.lr for s in ss])
        tops = []
        for x, s in enumerate(ss):
            if s.median is None:
                ax.text(x, 0.03, "no data\n(all failed)", ha="center", fontsize=8, transform=ax.get_xaxis_transform())
            elif s.lr * (s.bar_steps or 0) <= 0:
                ax.text(x, 0.03, "0 (at step 0)", ha="center", fontsize=8, transform=ax.get_xaxis_transform())
            else:
                tops.append(_lr_bar(ax, x, s, colors[s.lr]))
        ax.set_yscale("log")
        if tops:  # room above the highest whisker or arrow for its label
            ax.set_ylim(top=max(tops) * 5)
        ax.set_xticks(range(len(ss)), [f"{s.lr:.3g}" for s in ss])
        head = (headlines or {}).get(setting)
        ax.set_title(f"{setting}: LR x steps-to-transfer" + (f"\n{head}" if head else ""), fontsize=10)
        ax.set(xlabel="learning rate", ylabel="LR x steps (median over seeds, interpolated)")
        ax.margins(y=0.25)
        ax.grid(alpha=0.3, axis="y")
    fig.text(0.01, 0.005, f"error bars: {error_rule}; grey band: bracket (last checkpoint above, first at/below)\n"
             "hatched/faded = did not converge (bar = LR x max_steps, a lower bound)", fontsize=7)
    return _save(fig, path, rect=(0, 0.05, 1, 1))


def plot_paired(rows: Sequence[PairedRow], path: Path) -> Path:
    """High LR at T vs each lower LR at k*T: eval desired rate (bar = mean over seeds, dots = seeds)."""
    groups = _by_setting(rows)
    fig, axes = _panels(list(groups) or ["(no reference checkpoint)"])
    for ax, (setting, rs) in zip(axes, groups.items(), strict=False):
        lrs = sorted({r.lr for r in rs}, reverse=True)
        colors = _colors(lrs)
        labels = []
        for x, lr in enumerate(lrs):
            sel = [r for r in rs if r.lr == lr and r.desired_rate is not None]
            if not sel:
                labels.append(f"lr={lr:.3g}\nno data")
                continue
            mean = sum(r.desired_rate for r in sel) / len(sel)
            beyond = any(r.beyond_last_checkpoint for r in sel)
            ax.bar(x, mean, color=colors[lr], alpha=0.35 if beyond else 0.9, hatch="//" if beyond else None,
                   edgecolor="black", lw=0.8)
            if len(sel) == 1:
                r = sel[0]
                ax.errorbar(x, mean, yerr=[[mean - r.desired_low], [r.desired_high - mean]], color="black", capsize=4)
            else:
                ax.scatter([x] * len(sel), [r.desired_rate for r in sel], color="black", s=10, zorder=3)
            steps = "/".join(str(s) for s in sorted({r.step for r in sel}))
            targets = "/".join(f"{t:.3g}" for t in sorted({r.target_step for r in sel}))
            role = "reference T" if sel[0].k == 1 else f"k={sel[0].k:.3g}, kT={targets}"
            ratios = "/".join(f"{r.ratio:.2f}" for r in sel if r.ratio is not None)
            if sel[0].k != 1:  # the ratio actually read, beside the bar: < 1 means short of k*T
                ax.annotate(f"read/kT\n{ratios}", (x + 0.42, mean), fontsize=6, ha="left", va="center")
            labels.append(f"lr={lr:.3g}\n{role}\nstep {steps}" + (" (kT>last)" if beyond else ""))
        ax.set_xticks(range(len(lrs)), labels, fontsize=7)
        ax.set_ylim(0, 1.08)
        ref = next((r for r in rs if r.k == 1), None)
        sub = f"\nT = step {ref.step} at lr {ref.lr:.3g}" if ref is not None and len({r.seed for r in rs}) == 1 else ""
        choice = rs[0].t_choice if rs else ""
        ax.set_title(f"{setting}: paired comparison{sub}\n{choice}", fontsize=10)
        ax.set_ylabel("desired rate on eval prompts")
        ax.grid(alpha=0.3, axis="y")
    return _save(fig, path)


def plot_seed_variance(trials: Sequence[TrialAnalysis], summaries: Sequence[LRSummary], path: Path) -> Path:
    """Steps-to-transfer per seed and LR: filled = converged, open + arrow = not converged by max_steps (more than),
    grey x = stopped early without converging (left out of the median); black tick = median."""
    groups = _by_setting([t for t in trials if not t.failed])
    fig, axes = _panels(list(groups))
    medians = {(s.setting, s.lr): s for s in summaries}
    for ax, (setting, ts) in zip(axes, groups.items(), strict=True):
        lrs = sorted({t.lr for t in ts})
        colors = _colors(lrs)
        top = max(t.max_steps for t in ts)
        for x, lr in enumerate(lrs):
            seeds = sorted((t for t in ts if t.lr == lr), key=lambda t: t.seed)
            for j, t in enumerate(seeds):
                dx = x + (j - (len(seeds) - 1) / 2) * min(0.1, 0.6 / max(1, len(seeds)))
                if t.converged:
                    ax.scatter(dx, t.steps_to_transfer, color=colors[lr], edgecolor="black", s=36, zorder=3)
                elif t.lower_bound is None:
                    continue  # not an organism, or failed: no value and no bound to draw
                elif t.lower_bound == t.max_steps:
                    ax.scatter(dx, t.lower_bound, facecolor="none", edgecolor=colors[lr], s=36, lw=1.5, zorder=3)
                    ax.annotate("", xy=(dx, t.lower_bound * 1.6), xytext=(dx, t.lower_bound),
                                arrowprops={"arrowstyle": "->", "color": colors[lr], "lw": 1.2})
                else:
                    ax.scatter(dx, t.lower_bound, marker="x", color="grey", s=30, zorder=3)
            s = medians.get((setting, lr))
            if s is not None and s.median is not None:
                ax.hlines(s.median, x - 0.3, x + 0.3, color="black", lw=2)
        ax.set_yscale("symlog", linthresh=1)
        ax.set_ylim(-0.2 if any(t.steps_to_transfer == 0 for t in ts) else 0.7, top * 2.5)
        ticks = sorted({s for t in ts for s in (t.scheduled_steps or t.steps) if s >= ax.get_ylim()[0]})
        ax.set_yticks(ticks, [str(s) for s in ticks], fontsize=8)
        ax.minorticks_off()
        for x, lr in enumerate(lrs):  # each LR's own budget (per-LR step budgets differ)
            ax.hlines(max(t.max_steps for t in ts if t.lr == lr), x - 0.4, x + 0.4, color="grey", ls=":", lw=1)
        ax.set_xticks(range(len(lrs)), [f"{lr:.3g}" for lr in lrs])
        ax.set(title=f"{setting}: steps-to-transfer per seed", xlabel="learning rate", ylabel="steps (symlog)")
        ax.grid(alpha=0.3, axis="y")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], marker="o", ls="", color="tab:blue", mec="black", label="converged"),
               Line2D([], [], marker="o", ls="", mfc="none", color="tab:blue", label="> max_steps (not converged)"),
               Line2D([], [], marker="x", ls="", color="grey", label="stopped early (excluded)"),
               Line2D([], [], color="black", lw=2, label="median over seeds"),
               Line2D([], [], color="grey", ls=":", label="max_steps")]
    if axes:
        axes[0].legend(handles=handles, fontsize=7, loc="lower left")
    return _save(fig, path)


# --- capability: per checkpoint vs attack rate, and recovery before/after -------------------------------------

def plot_capability(table: Sequence[Mapping[str, Any]], limits: Mapping[str, float], path: Path) -> Path:
    """One panel per benchmark: capability score vs eval attack rate, one line per trial through its evaluated
    checkpoints (labelled by step), the baseline (dashed) and the degradation limit (dotted)."""
    benches = sorted({r["benchmark"] for r in table})
    fig, axes = _panels(benches)
    for ax, bench in zip(axes, benches, strict=True):
        rows = [r for r in table if r["benchmark"] == bench and r["eval_attack_rate"] is not None]
        colors = _colors({r["lr"] for r in rows} or {0.0})
        for trial in sorted({r["trial"] for r in rows}):
            pts = sorted((r for r in rows if r["trial"] == trial), key=lambda r: r["step"])
            ax.plot([r["eval_attack_rate"] for r in pts], [r["score"] for r in pts], marker="o", ms=4, lw=1,
                    color=colors[pts[0]["lr"]], label=f"{trial}")
            for r in pts:
                ax.annotate(str(r["step"]), (r["eval_attack_rate"], r["score"]), xytext=(3, 3),
                            textcoords="offset points", fontsize=7)
        base = next((r["baseline"] for r in table if r["benchmark"] == bench), None)
        if base is not None:
            ax.axhline(base, color="grey", ls="--", lw=1, label="before training")
            if bench in limits:
                ax.axhline(base * (1 - limits[bench]), color="red", ls=":", lw=1,
                           label=f"{limits[bench]:.0%} relative degradation")
        ax.set_xlim(-0.03, 1.03)
        ax.set_ylim(-0.03, 1.03)
        ax.set(title=f"{bench}: capability per checkpoint", xlabel="eval attack rate at the checkpoint",
               ylabel=f"{bench} score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return _save(fig, path)


def plot_recovery(results: Sequence[Mapping[str, Any]], path: Path) -> Path:
    """Before/after bars per recovery run: benchmark score (baseline as a dashed mark), eval attack rate, eval
    desired rate, train desired rate."""
    fig, axes = _panels([f"{r['trial']} @ {r['step']}" for r in results])
    metrics = [("score", "capability"), ("eval_attack_rate", "eval attack"), ("eval_desired_rate", "eval desired"),
               ("train_desired_rate", "train desired")]
    for ax, r in zip(axes, results, strict=True):
        for j, (tag, color) in enumerate((("before", "tab:red"), ("after", "tab:green"))):
            xs = [i + (j - 0.5) * 0.38 for i in range(len(metrics))]
            vals = [r[tag][k] for k, _ in metrics]
            ax.bar(xs, vals, width=0.36, color=color, alpha=0.85, label=f"{tag} recovery")
            for x, v in zip(xs, vals, strict=True):
                ax.annotate(f"{v:.2f}", (x, v), xytext=(0, 2), textcoords="offset points", ha="center", fontsize=7)
        ax.hlines(r["baseline"], -0.4, 0.4, color="black", ls="--", lw=1.2, label="capability before training")
        ax.set_xticks(range(len(metrics)), [f"{r['benchmark']}\n{name}" if k == "score" else name
                                            for k, name in metrics], fontsize=8)
        ax.set_ylim(0, 1.3)
        ax.set_title(f"{r['trial']} @ step {r['step']}: {r['n_labels']} labels, {r['steps']} x {r['batch_size']}",
                     fontsize=10)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7, loc="upper center", ncol=3)
    return _save(fig, path)
