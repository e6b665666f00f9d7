"""The experiments' figures: the onset experiment's probe curves and onsets per seed, and the dose-response's
curves and measures by mask ratio, drawn as :mod:`meap.plots` draws the library's (``draw_*`` returns the
figure, ``plot_*`` writes a PNG)."""

from __future__ import annotations

from pathlib import Path

from meap.plots import WIDTH, pyplot, save_figure, set_title


def draw_onsets(comparison: dict):
    """Left: probe accuracy against training tokens, per objective (thin: each seed; bold: the mean where every
    seed was probed) with the onset threshold. Right: each seed's onset under both objectives, joined
    (``paired.onset_comparison``); a censored run is drawn at its window's end with an open marker."""
    import numpy as np

    plt = pyplot()
    figure, axes = plt.subplots(1, 2, figsize=(WIDTH * 1.5, 4.0), squeeze=False, gridspec_kw={"width_ratios": [1.6, 1]})
    curves, axis = comparison["curves"], axes[0][0]
    for index, objective in enumerate(comparison["objectives"]):
        color = f"C{index}"
        for tokens, values in curves[objective]:
            axis.plot(np.array(tokens) / 1e6, values, color=color, alpha=0.25, linewidth=0.8)
        shortest = min(len(tokens) for tokens, _ in curves[objective])
        mean = np.mean([values[:shortest] for _, values in curves[objective]], axis=0)
        axis.plot(
            np.array(curves[objective][0][0][:shortest]) / 1e6,
            mean,
            color=color,
            linewidth=2.2,
            label=f"{objective.upper()} (mean of {len(curves[objective])})",
        )
    axis.axhline(comparison["threshold"], color="0.4", linestyle=":", linewidth=1, label="onset threshold")
    axis.set_xlabel("training tokens after the branch point (millions)")
    axis.set_ylabel("probe accuracy (whole value top-1)")
    axis.set_ylim(-0.03, 1.03)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8, loc="upper left")
    skill = "Copying" if comparison.get("task") == "copy" else "Key-based retrieval"
    seeds = len(comparison["seeds"])
    set_title(axis, f"{skill} probes during training", f"{seeds} training seed" + ("s" if seeds != 1 else ""))
    axis = axes[0][1]
    onsets, ends = comparison["onset_tokens_by_seed"], comparison["window_tokens_by_seed"]
    for index in range(len(comparison["seeds"])):
        points = [(onsets[o][index] or ends[o][index]) / 1e6 for o in comparison["objectives"]]
        axis.plot([0, 1], points, color="0.6", linewidth=0.8, zorder=1)
        for slot, objective in enumerate(comparison["objectives"]):
            censored = onsets[objective][index] is None
            axis.scatter(
                [slot], [points[slot]], color=f"C{slot}", zorder=2, s=30, facecolors="none" if censored else f"C{slot}"
            )
    axis.set_xticks([0, 1], [o.upper() for o in comparison["objectives"]])
    axis.set_xlim(-0.4, 1.4)
    axis.set_ylabel("onset (millions of tokens; open: censored)")
    axis.grid(alpha=0.3)
    set_title(axis, "Onset per seed", "each line one seed")
    return figure


def plot_onsets(comparison: dict, path: Path) -> Path:
    """Draw :func:`draw_onsets` into ``path`` (PNG)."""
    return save_figure(draw_onsets(comparison), path)


def draw_dose(comparison: dict, measures: dict[str, str]):
    """Left: the mean probe curve of each mask ratio (``meap.experiments.dose.dose_response``; ratio 0 is NTP). Then one
    panel per measure against the mask ratio: each seed thin, the mean over seeds bold."""
    import numpy as np

    plt = pyplot()
    shown = [name for name in measures if name in comparison["measures"]]
    figure, axes = plt.subplots(1, 1 + len(shown), figsize=(WIDTH * 2, 3.8), squeeze=False)
    ratios, colors = comparison["mask_ratios"], plt.get_cmap("viridis")
    axis = axes[0][0]
    for index, arm in enumerate(comparison["arms"]):
        curves = comparison["curves"][arm]
        shortest = min(len(tokens) for tokens, _ in curves)
        mean = np.mean([values[:shortest] for _, values in curves], axis=0)
        color = colors(index / max(1, len(ratios) - 1))
        axis.plot(np.array(curves[0][0][:shortest]) / 1e6, mean, color=color, label=f"{100 * ratios[index]:g}%")
    axis.axhline(comparison["threshold"], color="0.4", linestyle=":", linewidth=1)
    axis.set_xlabel("training tokens after the branch point (millions)")
    axis.set_ylabel("probe accuracy, mean over seeds")
    axis.set_ylim(-0.03, 1.03)
    axis.grid(alpha=0.3)
    axis.legend(fontsize=7, title="mask ratio", title_fontsize=7, loc="upper left")
    set_title(axis, "Probe curves by mask ratio", f"{len(comparison['seeds'])} seeds; 0% is NTP")
    x = 100 * np.array(ratios)
    for axis, name in zip(axes[0][1:], shown):
        result = comparison["measures"][name]
        for row in result["by_seed"]:
            axis.plot(x, row, color="0.6", linewidth=0.8, marker="o", markersize=3)
        axis.plot(x, result["mean_by_level"], color="C3", linewidth=2.2, marker="o", label="mean over seeds")
        axis.set_xlabel("mask ratio (%)")
        axis.set_ylabel(measures[name].replace(" (%)", " (share)"))
        axis.grid(alpha=0.3)
        label = measures[name].replace(" (%)", "")
        set_title(axis, label[0].upper() + label[1:], f"Page p = {result['page_p']:.3g} (two-sided)")
    axes[0][1].legend(fontsize=7)
    return figure


def plot_dose(comparison: dict, measures: dict[str, str], path: Path) -> Path:
    """Draw :func:`draw_dose` into ``path`` (PNG)."""
    return save_figure(draw_dose(comparison, measures), path)
