"""The figures: NIAH heatmaps, accuracy by gold-document position, attention by segment and by layer, loss
curves. Matplotlib and the run directory's names only: the evaluations and the comparison report both draw
with it.

Every figure is sized to be read at 100% (about 900 px wide at 150 dpi), labels both axes, puts ticks only
on the discrete values it plots (positions, layers, lengths), shows how many samples each point averages,
and draws series with distinct colours, markers and line styles, later ones as larger hollow markers, so a
series lying exactly on another (two lines of zeros) stays visible. Each ``draw_*`` returns the matplotlib
figure (for a notebook, or to inspect); ``plot_*`` draws it into a PNG and closes it.
"""

from __future__ import annotations

import math
import re
import textwrap
from pathlib import Path

from meap.rundir import FINAL_DIR
from meap.stats import wilson_interval

DPI = 150
WIDTH = 6.4  # inches: 960 px at DPI
_MARKERS = ("o", "s", "^", "D", "v", "P")
_LINES = ("-", "--", ":", "-.")


def pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def series_style(index: int) -> dict:
    """Line and marker style of the ``index``-th series: later series are hollow and larger, so an identical
    earlier series shows through them."""
    return dict(
        color=f"C{index % 10}",
        marker=_MARKERS[index % len(_MARKERS)],
        linestyle=_LINES[index % len(_LINES)],
        markersize=5 + 2 * index,
        markerfacecolor=f"C{index % 10}" if index == 0 else "none",
        markeredgewidth=1.5,
    )


def short_name(name: str) -> str:
    """A model or run path as a legend shows it: ``runs/meap/final`` -> ``meap``."""
    path = Path(name)
    if path.name == FINAL_DIR and path.parent.name:
        path = path.parent
    return path.name or name


def legend_names(labels) -> dict[str, str]:
    """Each series' legend name: :func:`short_name` where that keeps the names apart, else the label without
    its ``final`` (``seed-0/ntp`` and ``seed-1/ntp`` both shorten to ``ntp``: then both stay whole)."""
    labels = list(labels)
    short = [short_name(label) for label in labels]
    if len(set(short)) == len(short):
        return dict(zip(labels, short))
    return {label: label.removesuffix(f"/{FINAL_DIR}") for label in labels}


def wrap_title(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width`` characters, breaking between words and never inside a
    parenthesis (one longer than a line is wrapped alone)."""
    lines: list[str] = []
    for group in re.findall(r"\([^()]*\)[^\s]*|\S+", text):
        pieces = textwrap.wrap(group, width) if len(group) > width else [group]
        for piece in pieces:
            if lines and len(lines[-1]) + 1 + len(piece) <= width:
                lines[-1] += " " + piece
            else:
                lines.append(piece)
    return lines


def set_title(axes, text: str, subtitle: str = "") -> None:
    # as many characters as the axes are wide (about 12 per inch at 10 pt)
    inches = axes.get_position().width * axes.figure.get_figwidth()
    wrapped = "\n".join(wrap_title(text, max(30, int(12 * inches))))
    axes.set_title(wrapped + (f"\n{subtitle}" if subtitle else ""), fontsize=10)


def save_figure(figure, path: Path) -> Path:
    figure.tight_layout()
    figure.savefig(path, dpi=DPI)
    pyplot().close(figure)
    return path


def draw_niah_heatmap(cells: list[dict], title: str = "Needle in a haystack", difference: bool = False):
    """The usual NIAH picture: x = context length (tokens), y = needle depth (%), colour = mean score.

    ``cells``: ``[{"length": int, "depth": float, "score": float, "samples": int (optional)}, ...]``; a
    missing cell is left blank. ``difference``: the scores are differences in [-1, 1] (a diverging scale
    centred on 0).
    """
    plt = pyplot()
    from matplotlib.colors import LinearSegmentedColormap

    lengths = sorted({cell["length"] for cell in cells})
    depths = sorted({cell["depth"] for cell in cells})
    grid = [[float("nan")] * len(lengths) for _ in depths]
    counts = [[None] * len(lengths) for _ in depths]
    for cell in cells:
        y, x = depths.index(cell["depth"]), lengths.index(cell["length"])
        grid[y][x], counts[y][x] = cell["score"], cell.get("samples")
    shown = {n for row in counts for n in row if n is not None}
    uniform = len(shown) == 1
    colours = LinearSegmentedColormap.from_list("niah", ["#F0496E", "#FFFFFF" if difference else "#EBB839", "#0CD79F"])
    figure, axes = plt.subplots(figsize=(max(WIDTH, 2.6 + 0.9 * len(lengths)), max(3.8, 1.9 + 0.45 * len(depths))))
    image = axes.imshow(grid, cmap=colours, vmin=-1.0 if difference else 0.0, vmax=1.0, aspect="auto")
    for y, row in enumerate(grid):
        for x, value in enumerate(row):
            if not math.isnan(value):
                text = f"{value:+.2f}" if difference else f"{value:.2f}"
                if counts[y][x] is not None and not uniform:
                    text += f"\nn={counts[y][x]}"
                axes.text(x, y, text, ha="center", va="center", fontsize="medium")  # the ticks' size
    axes.set_xticks(range(len(lengths)), [str(length) for length in lengths])
    axes.set_yticks(range(len(depths)), [f"{depth:g}" for depth in depths])
    axes.set_xlabel("context length (tokens)")
    axes.set_ylabel("needle depth (%)")
    set_title(axes, title, f"n = {shown.pop()} per cell" if uniform else "")
    figure.colorbar(image, ax=axes, label="score difference" if difference else "score (share recalled)")
    return figure


def plot_niah_heatmap(
    cells: list[dict], path: Path, title: str = "Needle in a haystack", difference: bool = False
) -> Path:
    """Draw :func:`draw_niah_heatmap` into ``path`` (PNG)."""
    return save_figure(draw_niah_heatmap(cells, title=title, difference=difference), path)


def draw_accuracy_by_position(
    series: dict[str, dict[int, float]],
    title: str = "Multi-document QA",
    xlabel: str = "position of the gold document",
    examples: dict[str, dict[int, int]] | None = None,
    ylabel: str = "accuracy (best-subspan EM)",
):
    """Accuracy against gold-document position (0-based keys, drawn 1-based), one line per series (a model,
    or a document count); ``examples``: questions behind each point, drawn as 95% Wilson intervals and
    named in the legend."""
    plt = pyplot()
    figure, axes = plt.subplots(figsize=(WIDTH, 4.0))
    positions = sorted({p for by_position in series.values() for p in by_position})
    intervals, names = False, legend_names(series)
    for index, (label, by_position) in enumerate(series.items()):
        points = sorted(by_position)
        counts = (examples or {}).get(label) or {}
        x, y = [p + 1 for p in points], [by_position[p] for p in points]
        shown = set(counts.get(p) for p in points)
        name = names[label] + (f" (n = {shown.pop()} per position)" if len(shown) == 1 and None not in shown else "")
        if points and all(counts.get(p) for p in points):
            bounds = [wilson_interval(round(by_position[p] * counts[p]), counts[p]) for p in points]
            below, above = [v - low for v, (low, _) in zip(y, bounds)], [high - v for v, (_, high) in zip(y, bounds)]
            axes.errorbar(x, y, yerr=[below, above], capsize=3, elinewidth=1, **series_style(index), label=name)
            intervals = True
        else:
            axes.plot(x, y, **series_style(index), label=name)
    axes.set_xticks([p + 1 for p in positions])
    axes.set_xlabel(xlabel + " (1 = first)")
    axes.set_ylabel(ylabel)
    axes.set_ylim(-0.04, 1.04)  # a line at 0 or 1 stays clear of the frame
    set_title(axes, title, "bars: 95% Wilson intervals over questions" if intervals else "")
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    return figure


def plot_accuracy_by_position(
    series: dict[str, dict[int, float]],
    path: Path,
    title: str = "Multi-document QA",
    xlabel: str = "position of the gold document",
    examples: dict[str, dict[int, int]] | None = None,
    ylabel: str = "accuracy (best-subspan EM)",
) -> Path:
    """Draw :func:`draw_accuracy_by_position` into ``path`` (PNG)."""
    return save_figure(
        draw_accuracy_by_position(series, title=title, xlabel=xlabel, examples=examples, ylabel=ylabel), path
    )


def draw_segment_mass(results: dict[str, dict], title: str = "Attention from the query, by segment (mean over layers)"):
    """Grouped bars: for each segment (before, answer, after, query), one bar per model, with its 95% interval
    over probes where there are several. ``results``: model -> its ``meap analyze attention`` result."""
    plt = pyplot()
    segments = list(next(iter(results.values()))["average"]["segment_mass"])
    width = 0.8 / max(1, len(results))
    figure, axes = plt.subplots(figsize=(WIDTH, 3.8))
    intervals, names = False, legend_names(results)
    for i, (name, result) in enumerate(results.items()):
        positions = [s + (i - (len(results) - 1) / 2) * width for s in range(len(segments))]
        mass, spread = result["average"]["segment_mass"], result["average"].get("segment_mass_half_width")
        bars = axes.bar(
            positions,
            [mass[s] for s in segments],
            width,
            color=f"C{i % 10}",
            hatch=None if i == 0 else "//",
            edgecolor="black",
            linewidth=0.5,
            yerr=[spread[s] for s in segments] if spread else None,
            capsize=3 if spread else 0,
            error_kw={"elinewidth": 1},
            label=f"{names[name]} (n = {result['samples']})",
        )
        intervals = intervals or bool(spread)
        axes.bar_label(bars, fmt="%.2f", fontsize=7, padding=2)  # above the error bar where there is one
    axes.set_xticks(range(len(segments)), segments)
    axes.set_xlabel("segment of the probe")
    axes.set_ylabel("attention mass (share)")
    axes.set_ylim(0, 1.12 * max(axes.get_ylim()[1], 0.01))  # room for the values above the tallest bar
    set_title(axes, title, "bars: 95% t-intervals over probes" if intervals else "")
    axes.legend(fontsize=8)
    return figure


def plot_segment_mass(
    results: dict[str, dict], path: Path, title: str = "Attention from the query, by segment (mean over layers)"
) -> Path:
    """Draw :func:`draw_segment_mass` into ``path`` (PNG)."""
    return save_figure(draw_segment_mass(results, title=title), path)


def draw_attention_layers(results: dict[str, dict]):
    """Per-layer curves, one line per model: answer-segment mass, entropy, and (with [MASK]) score decay."""
    plt = pyplot()
    panels = [
        ("answer mass", "attention mass on the answer", lambda layer: layer["segment_mass"]["answer"]),
        ("attention entropy", "entropy (nats)", lambda layer: layer["entropy"]),
    ]
    if any(r.get("masked_pass", r["has_mask_token"]) for r in results.values()):
        panels.append(
            ("masked-key score decay", "score decay (clean - masked)", lambda layer: layer.get("score_decay"))
        )
    figure, axes = plt.subplots(1, len(panels), figsize=(3.6 * len(panels), 3.6), squeeze=False)
    names = legend_names(results)
    layers = sorted({layer["layer"] for result in results.values() for layer in result["layers"]})
    for axis, (title, ylabel, value) in zip(axes[0], panels):
        for index, (name, result) in enumerate(results.items()):
            points = [(layer["layer"], value(layer)) for layer in result["layers"] if value(layer) is not None]
            if points:
                axis.plot(*zip(*points), **series_style(index), label=f"{names[name]} (n = {result['samples']})")
        axis.set_xticks(layers)
        axis.set_xlabel("layer (0 = first)")
        axis.set_ylabel(ylabel)
        axis.grid(alpha=0.3)
        set_title(axis, title)
    axes[0][0].legend(fontsize=8)
    return figure


def plot_attention_layers(results: dict[str, dict], path: Path) -> Path:
    """Draw :func:`draw_attention_layers` into ``path`` (PNG)."""
    return save_figure(draw_attention_layers(results), path)


def draw_loss_curves(curves: dict[str, dict[str, list[tuple[float, float]]]], xlabel: str):
    """Two panels: validation loss (clean inputs: comparable across objectives) and training loss (on the
    inputs as trained: MEAP's are masked). ``curves``: run -> {"val_loss": [(x, loss)], "loss": [...]}."""
    plt = pyplot()
    panels = [("val_loss", "validation loss (clean inputs)"), ("loss", "training loss (inputs as trained)")]
    figure, axes = plt.subplots(1, 2, figsize=(2 * WIDTH * 0.75, 3.8), squeeze=False)
    for axis, (key, title) in zip(axes[0], panels):
        drawn = False
        for index, (name, by_key) in enumerate(curves.items()):
            points = by_key.get(key) or []
            if points:
                axis.plot(*zip(*points), **series_style(index), markevery=max(1, len(points) // 12), label=name)
                drawn = True
        if all(isinstance(x, int) for by_key in curves.values() for x, _ in by_key.get(key) or []):
            from matplotlib.ticker import MaxNLocator

            axis.xaxis.set_major_locator(MaxNLocator(integer=True))  # optimizer steps
        if drawn:
            axis.legend(fontsize=8)
        else:
            axis.text(
                0.5,
                0.5,
                "no validation in any run" if key == "val_loss" else "no training loss logged",
                ha="center",
                va="center",
                transform=axis.transAxes,
            )
        axis.set_xlabel(xlabel)
        axis.set_ylabel("loss (nats per token)")
        axis.grid(alpha=0.3)
        set_title(axis, title)
    return figure


def plot_loss_curves(curves: dict[str, dict[str, list[tuple[float, float]]]], path: Path, xlabel: str) -> Path:
    """Draw :func:`draw_loss_curves` into ``path`` (PNG)."""
    return save_figure(draw_loss_curves(curves, xlabel), path)
