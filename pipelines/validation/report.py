"""The gate's verdict for people: the table it prints and the PNG beside `blessing.json`."""

from pathlib import Path

import numpy as np

# figures chooses the headless backend before pyplot loads, so plt comes from there.
from pipelines.data.figures import plt, save_figure
from serving.contract import Blessing


def table(blessing: Blessing) -> str:
    """The checks as a plain-text table, then the notes and the verdict."""
    rows = [("check", "value", "baseline", "threshold", "verdict", "detail")]
    rows += [
        (check.name, _figure(check.value), _figure(check.baseline), check.threshold, str(check.verdict), check.detail)
        for check in blessing.checks
    ]
    widths = [max(len(row[column]) for row in rows) for column in range(5)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row[:5], widths)) + "  " + row[5] for row in rows]
    return "\n".join([*lines, *(f"note: {note}" for note in blessing.notes), f"verdict: {blessing.summary()}"])


def _figure(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def plot_blessing(blessing: Blessing, path: Path, *, title: str = "") -> Path:
    """The gate's figures, candidate beside baseline: the optimizing metric and each class (or style) in one
    panel, latency and size in their own, each with its threshold dashed; failed checks in red."""
    quality = [check for check in blessing.checks if check.value is not None and "vs baseline" not in check.name]
    panels = {
        "quality": [check for check in quality if not check.name.startswith(("latency", "size"))],
        "p99 ms, batch 1": [check for check in quality if check.name.startswith("latency")],
        "size MB": [check for check in quality if check.name.startswith("size")],
    }
    failed = {check.name for check in blessing.failed}
    widths = [max(len(checks), 2) for checks in panels.values()]
    fig, axes = plt.subplots(
        1, 3, figsize=(4 + 0.5 * sum(widths), 4.5), gridspec_kw={"width_ratios": widths}, squeeze=False
    )
    for ax, (panel, checks) in zip(axes.flat, panels.items()):
        positions = np.arange(len(checks))
        candidate = [check.value for check in checks]
        baseline = [np.nan if check.baseline is None else check.baseline for check in checks]
        colours = ["tab:red" if check.name in failed else "tab:blue" for check in checks]
        ax.bar(positions - 0.2, candidate, 0.4, color=colours, label="candidate")
        ax.bar(positions + 0.2, baseline, 0.4, color="tab:gray", label="baseline")
        tallest = np.nanmax([*candidate, *baseline, 0.0])
        names = []
        for position, check in zip(positions, checks):
            if check.limit is not None and check.limit <= 3 * tallest:
                ax.hlines(check.limit, position - 0.45, position + 0.45, colors="black", linestyles="dashed")
                names.append(check.name)
            else:  # a generous ceiling would flatten the bars: named instead of drawn
                names.append(check.name + ("" if check.limit is None else f" ({check.threshold})"))
        ax.set_xticks(positions, names, rotation=60, ha="right", fontsize=8)
        ax.set_title(panel)
        ax.grid(axis="y", alpha=0.3)
    axes.flat[0].plot([], [], "k--", label="threshold")
    axes.flat[0].legend(loc="lower left")
    verdict = "blessed" if blessing.blessed else "NOT blessed"
    fig.suptitle(f"{title}: {verdict}" if title else verdict)
    fig.tight_layout()
    return save_figure(fig, path)
