"""Figures (matplotlib, headless): next to results.json, and the comparison report's."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from cl_adapters.atomic import atomic_path


def pyplot():
    """matplotlib.pyplot on the headless Agg backend."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def heatmap(ax, values: np.ndarray, annotate: bool = True, fontsize: int = 7, **kwargs):
    """Values in [0, 1] as colours, each cell labelled with its value unless NaN; returns the image."""
    image = ax.imshow(values, vmin=0, vmax=1, cmap="viridis", **kwargs)
    if annotate:
        for (i, j), a in np.ndenumerate(values):
            if not np.isnan(a):
                ax.text(j, i, f"{a:.2f}", ha="center", va="center", fontsize=fontsize,
                        color="white" if a < 0.6 else "black")
    return image


def save_figure(fig, path: str | Path, **kwargs) -> Path:
    """PNG, written atomically; the figure is closed."""
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120, **kwargs)
    pyplot().close(fig)
    return Path(path)


def accuracy_matrix_figure(R: list[list[float | None]], title: str = ""):
    """A heatmap of R[i][j] (accuracy on task j after training task i); unmeasured cells blank."""
    values = np.array([[np.nan if a is None else a for a in row] for row in R], dtype=float)
    fig, ax = pyplot().subplots(figsize=(1.5 + 0.6 * len(R), 1.2 + 0.5 * len(R)), layout="constrained")
    image = heatmap(ax, values)
    ax.set_xlabel("evaluated on task j")
    ax.set_ylabel("after training task i")
    ax.set_title(title or "accuracy matrix R[i, j]")
    fig.colorbar(image, ax=ax, label="accuracy")
    return fig


def plot_task_id_confusion(confusion: list[list[int]], path: str | Path) -> Path:
    """Which task the router sent each task's test samples to: shares per true task (rows)."""
    counts = np.array(confusion, dtype=float)
    shares = counts / np.maximum(counts.sum(1, keepdims=True), 1)
    fig, ax = pyplot().subplots(figsize=(1.5 + 0.6 * len(counts), 1.2 + 0.5 * len(counts)), layout="constrained")
    image = heatmap(ax, shares)
    ax.set_xlabel("routed to task")
    ax.set_ylabel("true task")
    ax.set_title("task-ID confusion")
    fig.colorbar(image, ax=ax, label="share of the task's test samples")
    return save_figure(fig, path)


def plot_fusion_attention(attention: dict[int, dict], path: str | Path, panels: int = 8) -> Path:
    """One heatmap per fused task: adapted layers (rows) x the adapters it fuses (columns); over more than
    ``panels`` fused tasks, one heatmap of tasks x adapters, each cell the mean over layers."""
    tasks = sorted(attention)
    if len(tasks) > panels:
        return _fusion_attention_by_task(attention, tasks, path)
    layers = attention[tasks[0]]["layers"]
    prefix = os.path.commonprefix([name.rsplit(".", 1)[0] + "." for name in layers]) if len(layers) > 1 else ""
    prefix = prefix[: prefix.rfind(".") + 1]  # cut at a dot: "encoder.layer.", not "encoder.layer.1"
    widths = [len(attention[t]["adapters"]) for t in tasks]
    fig, axes = pyplot().subplots(1, len(tasks), squeeze=False, sharey=True, width_ratios=widths, layout="constrained",
                             figsize=(1.5 + 0.6 * sum(widths) + 0.4 * len(tasks), 1.2 + 0.35 * len(layers)))
    for ax, task in zip(axes[0], tasks):
        weights = np.array(attention[task]["weights"])
        image = heatmap(ax, weights, annotate=weights.size <= 200, aspect="auto")
        ax.set_xticks(range(weights.shape[1]), attention[task]["adapters"])
        ax.set_xlabel("adapter of task")
        ax.set_title(f"task {task}")
    axes[0][0].set_yticks(range(len(layers)), [name.removeprefix(prefix) for name in layers])
    axes[0][0].set_ylabel("adapted layer")
    fig.colorbar(image, ax=axes[0].tolist(), label="mean fusion attention")
    fig.suptitle("AdapterFusion: which adapters each task uses")
    return save_figure(fig, path)


def _fusion_attention_by_task(attention: dict[int, dict], tasks: list, path: str | Path) -> Path:
    adapters = sorted({a for t in tasks for a in attention[t]["adapters"]}, key=lambda a: (len(a), a))  # "2" < "10"
    values = np.full((len(tasks), len(adapters)), np.nan)
    for row, task in enumerate(tasks):
        for column, weight in zip(attention[task]["adapters"], np.mean(attention[task]["weights"], axis=0)):
            values[row, adapters.index(column)] = weight
    fig, ax = pyplot().subplots(figsize=(2 + 0.25 * len(adapters), 1.5 + 0.25 * len(tasks)), layout="constrained")
    image = heatmap(ax, values, annotate=False, aspect="auto")
    ax.set_xticks(range(len(adapters)), adapters, fontsize=6)
    ax.set_yticks(range(len(tasks)), [str(t) for t in tasks], fontsize=6)
    ax.set_xlabel("adapter of task")
    ax.set_ylabel("fused task")
    fig.colorbar(image, ax=ax, label="mean fusion attention over layers")
    fig.suptitle("AdapterFusion: which adapters each task uses")
    return save_figure(fig, path)


def accuracy_curve_figure(curves: dict[str, np.ndarray], path: Path) -> Path:
    """A_b against step b, one line per labelled curve (a report row's mean over seeds)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
    for label, curve in curves.items():
        ax.plot(np.arange(len(curve)), curve, marker="o", markersize=3, label=label)
    ax.set_xticks(np.arange(max(len(c) for c in curves.values())))  # tasks numbered as in task_accuracy.png
    ax.set_xlabel("after training task b")
    ax.set_ylabel("A_b (mean over seeds)")
    ax.set_title("accuracy on all tasks seen so far (sample-weighted)", fontsize=9)
    fig.legend(loc="outside right upper", fontsize=7)
    return save_figure(fig, path)


def report_figures(mean_R: dict[tuple[str, str, str], np.ndarray], rows: list[dict], out: Path,
                   curves: dict[tuple[str, str, str], np.ndarray] | None = None) -> list[Path]:
    """The comparison report's figures from its (scenario, stream, row) -> mean R, its table rows and
    (scenario, stream, row) -> mean accuracy curve A_b: accuracy_matrices.png, task_accuracy.png,
    accuracy_curve.png (if any row has a curve) and acc_vs_params.png in ``out``."""
    if not mean_R:  # single_task alone: nothing to plot
        return []
    plt = pyplot()
    from matplotlib import ticker

    labels = {key: f"{key[1]}: {key[2]}" if key[0] == "task_il" else f"{key[1]} {key[0]}: {key[2]}" for key in mean_R}
    ncols = min(len(mean_R), 4)
    nrows = -(-len(mean_R) // ncols)
    written = []

    def panels(height: float, **kw):
        fig, axes = plt.subplots(nrows, ncols, figsize=(0.5 + 3.4 * ncols, height * nrows), squeeze=False,
                                 layout="constrained", **kw)
        for ax in axes.flat[len(mean_R):]:
            ax.set_visible(False)
        return fig, axes

    fig, axes = panels(3.4)
    for ax, (key, R) in zip(axes.flat, mean_R.items()):
        image = heatmap(ax, R, annotate=len(R) <= 10, fontsize=6)
        ax.set_title(labels[key], fontsize=8)
        ax.set_xlabel("task j")
        ax.set_ylabel("after task i")
    fig.colorbar(image, ax=axes.ravel().tolist(), label="mean accuracy R[i, j]")
    written.append(save_figure(fig, out / "accuracy_matrices.png"))

    fig, axes = panels(3.2, sharey=True)
    for ax, (key, R) in zip(axes.flat, mean_R.items()):
        steps = np.arange(len(R))
        for j in range(R.shape[1]):
            ax.plot(steps[j:], R[j:, j], marker="o", markersize=3, label=f"task {j}")
        ax.set_xticks(steps)
        ax.set_title(labels[key], fontsize=8)
        ax.set_xlabel("after training task i")
    for ax in axes[:, 0]:
        ax.set_ylabel("accuracy")
    fig.legend(*axes.flat[0].get_legend_handles_labels(), loc="outside right upper", fontsize=7, title="accuracy on")
    written.append(save_figure(fig, out / "task_accuracy.png"))
    if curves:
        labelled = {labels[key]: curve for key, curve in curves.items()}
        written.append(accuracy_curve_figure(labelled, out / "accuracy_curve.png"))

    fig, ax = plt.subplots(figsize=(8, 3.6), layout="constrained")
    for row in rows:
        ax.errorbar(row["trainable_params_per_task"], row["acc"], yerr=row["acc_ci95"] or 0, marker="o", capsize=3,
                    label=f"{row['stream']}: {row['run']}" if row["scenario"] == "task_il" else
                    f"{row['stream']} {row['scenario']}: {row['run']}")
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(ticker.LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(ticker.EngFormatter(sep=""))  # 20k, 50k, 100k: short labels
    ax.xaxis.set_minor_formatter(ticker.NullFormatter())  # unlabelled minor ticks never overlap
    ax.set_xlabel("trainable parameters per task (mean)")
    ax.set_ylabel("ACC (mean ± 95% CI over seeds)")
    fig.legend(loc="outside right upper", fontsize=7)
    written.append(save_figure(fig, out / "acc_vs_params.png"))
    return written
