"""Plots of evaluation results. Reads plain result dicts (the ``summary.json`` files); no torch, no transformers."""

from __future__ import annotations

from pathlib import Path


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")  # files only, no display needed
    import matplotlib.pyplot as plt

    return plt


def plot_niah_heatmap(cells: list[dict], path: Path, title: str = "Needle in a haystack") -> Path:
    """The usual NIAH picture: x = context length (tokens), y = needle depth (%), colour = mean score.

    ``cells``: ``[{"length": int, "depth": float, "score": float}, ...]``; a missing cell is left blank.
    """
    plt = _pyplot()
    from matplotlib.colors import LinearSegmentedColormap

    lengths = sorted({cell["length"] for cell in cells})
    depths = sorted({cell["depth"] for cell in cells})
    grid = [[float("nan")] * len(lengths) for _ in depths]
    for cell in cells:
        grid[depths.index(cell["depth"])][lengths.index(cell["length"])] = cell["score"]
    colours = LinearSegmentedColormap.from_list("niah", ["#F0496E", "#EBB839", "#0CD79F"])
    figure, axes = plt.subplots(figsize=(1.2 + 0.9 * len(lengths), 1.0 + 0.45 * len(depths)))
    image = axes.imshow(grid, cmap=colours, vmin=0.0, vmax=1.0, aspect="auto")
    for y, row in enumerate(grid):
        for x, value in enumerate(row):
            if value == value:  # not NaN
                axes.text(x, y, f"{value:.2f}", ha="center", va="center", fontsize=8)
    axes.set_xticks(range(len(lengths)), [str(length) for length in lengths])
    axes.set_yticks(range(len(depths)), [f"{depth:g}" for depth in depths])
    axes.set_xlabel("context length (tokens)")
    axes.set_ylabel("needle depth (%)")
    axes.set_title(title)
    figure.colorbar(image, ax=axes, label="score")
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_accuracy_by_position(series: dict[str, dict[int, float]], path: Path,
                              title: str = "Multi-document QA", xlabel: str = "position of the gold document") -> Path:
    """Accuracy against gold-document position, one line per series (a model, or a document count)."""
    plt = _pyplot()
    figure, axes = plt.subplots(figsize=(6, 4))
    for label, by_position in series.items():
        positions = sorted(by_position)
        axes.plot([p + 1 for p in positions], [by_position[p] for p in positions], marker="o", label=label)
    axes.set_xlabel(xlabel + " (1 = first)")
    axes.set_ylabel("accuracy (best-subspan EM)")
    axes.set_ylim(0.0, 1.0)
    axes.set_title(title)
    axes.grid(alpha=0.3)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_segment_mass(masses: dict[str, dict[str, float]], path: Path,
                      title: str = "Attention from the query, by segment (mean over layers)") -> Path:
    """Grouped bars: for each segment (before, answer, after, query), one bar per model."""
    plt = _pyplot()
    segments = list(next(iter(masses.values())))
    width = 0.8 / max(1, len(masses))
    figure, axes = plt.subplots(figsize=(6.5, 3.6))
    for i, (name, mass) in enumerate(masses.items()):
        positions = [s + (i - (len(masses) - 1) / 2) * width for s in range(len(segments))]
        bars = axes.bar(positions, [mass[s] for s in segments], width, label=_short(name))
        axes.bar_label(bars, fmt="%.2f", fontsize=7)
    axes.set_xticks(range(len(segments)), segments)
    axes.set_ylabel("attention mass")
    axes.set_title(title, fontsize=10)
    axes.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def plot_attention_layers(results: dict[str, dict], path: Path) -> Path:
    """Per-layer curves, one line per model: answer-segment mass, entropy, and (with [MASK]) score decay."""
    plt = _pyplot()
    panels = [("answer mass", lambda layer: layer["segment_mass"]["answer"]), ("entropy (nats)", lambda layer: layer["entropy"])]
    if any(r["has_mask_token"] for r in results.values()):
        panels.append(("masked-key score decay", lambda layer: layer.get("score_decay")))
    figure, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.3))
    for axis, (label, value) in zip(axes, panels):
        for name, result in results.items():
            points = [(layer["layer"], value(layer)) for layer in result["layers"] if value(layer) is not None]
            if points:
                axis.plot(*zip(*points), marker="o", markersize=3, label=_short(name))
        axis.set_xlabel("layer")
        axis.set_title(label, fontsize=10)
    axes[0].legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)
    return path


def _short(name: str) -> str:
    return Path(name).name or name
