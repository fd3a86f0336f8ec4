"""The report's charts: matplotlib figures (Agg, no pyplot state) as PNG data URIs.

Each function returns a `data:image/png;base64,…` string, or None when there is nothing
to draw (the template then says so in words).
"""

from __future__ import annotations

import base64
import io
from collections import Counter
from collections.abc import Sequence

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

__all__ = ["candidates_by_source", "images_per_category", "votes_per_pair", "worker_accuracy"]

STATUS_COLOURS = {"ok": "#4c9a5b", "failed": "#c8553d", "skipped": "#d9a441", "pending": "#9aa5b1"}
MAX_BARS = 30


def _figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), dpi=90, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def _data_uri(figure: Figure) -> str:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def candidates_by_source(sources: dict[str, Counter]) -> str | None:
    """Horizontal stacked bars: candidates per source by status."""
    if not sources:
        return None
    names = sorted(sources)[:MAX_BARS]
    figure = _figure(7, 0.5 + 0.4 * len(names))
    axes = figure.add_subplot()
    left = [0] * len(names)
    for status, colour in STATUS_COLOURS.items():
        values = [sources[name].get(status, 0) for name in names]
        if any(values):
            axes.barh(names, values, left=left, color=colour, label=status)
            left = [a + b for a, b in zip(left, values, strict=True)]
    axes.invert_yaxis()
    axes.set_xlabel("candidates")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return _data_uri(figure)


def images_per_category(rows: Sequence) -> str | None:
    """Bars per category (the MAX_BARS with most images): gathered images, accepted, train and val."""
    rows = sorted((r for r in rows if r.images or r.accepted), key=lambda r: (-r.images, r.wnid))[:MAX_BARS]
    if not rows:
        return None
    figure = _figure(7, 0.8 + 0.32 * len(rows))
    axes = figure.add_subplot()
    positions = range(len(rows))
    height = 0.27
    axes.barh([p - height for p in positions], [r.images for r in rows], height, color="#9aa5b1", label="images")
    axes.barh(list(positions), [r.accepted for r in rows], height, color="#4c9a5b", label="accepted")
    axes.barh([p + height for p in positions], [r.train for r in rows], height, color="#3f6fb5", label="train")
    axes.barh([p + height for p in positions], [r.val for r in rows], height, left=[r.train for r in rows],
              color="#e08a3c", label="val")
    axes.set_yticks(list(positions), [f"{r.name} ({r.wnid})" for r in rows], fontsize="small")
    axes.invert_yaxis()
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return _data_uri(figure)


def votes_per_pair(distribution: dict[int, int]) -> str | None:
    """How many (image, category) pairs got 1, 2, 3, … votes."""
    if not distribution:
        return None
    figure = _figure(6, 2.6)
    axes = figure.add_subplot()
    votes = sorted(distribution)
    axes.bar([str(v) for v in votes], [distribution[v] for v in votes], color="#3f6fb5")
    axes.set_xlabel("votes on the pair")
    axes.set_ylabel("pairs")
    return _data_uri(figure)


def worker_accuracy(accuracies: Sequence[float], control_accuracies: Sequence[float]) -> str | None:
    """Histograms of the workers' estimated accuracy and their accuracy on controls."""
    if not accuracies and not control_accuracies:
        return None
    figure = _figure(6, 2.6)
    axes = figure.add_subplot()
    bins = [i / 20 for i in range(21)]
    if accuracies:
        axes.hist(accuracies, bins=bins, alpha=0.7, color="#3f6fb5", label="estimated accuracy")
    if control_accuracies:
        axes.hist(control_accuracies, bins=bins, alpha=0.6, color="#e08a3c", label="accuracy on controls")
    axes.set_xlabel("accuracy")
    axes.set_ylabel("workers")
    axes.legend(loc="upper left", bbox_to_anchor=(1.01, 1), fontsize="small")
    return _data_uri(figure)
