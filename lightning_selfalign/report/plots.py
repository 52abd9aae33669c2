"""The report's four pictures, drawn on matplotlib's Agg canvas (no display, no global pyplot state): rows through
every stage, execution verdicts, pass@1 by round and training loss. Every picture is SIZE at DPI, and a picture
with nothing to show still gets written, saying so, so the page never has a broken image.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from lightning_selfalign.report.collect import FUNNEL, Arm, verdict_order

SIZE = (8.0, 4.5)
DPI = 100
# Pass green and fail red as a reader expects; the rest kept apart from both.
VERDICT_COLORS = {"pass": "#2ca02c", "fail": "#d62728", "error": "#ff7f0e", "timeout": "#9467bd",
                  "memory": "#8c564b", "crash": "#404040", "no_tests": "#bcbd22", "policy": "#e377c2"}  # fmt: skip
OTHER_COLOR = "#b0b0b0"
ARM_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#17becf")
ARM_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
SMOOTH_ABOVE = 60  # points in a round's loss segment before a smoothed line is drawn over the raw one


def write_plots(arms: Sequence[Arm], output_dir: Path) -> dict[str, Path]:
    """All four pictures into ``output_dir``: name -> path."""
    drawers = {"funnel": draw_funnel, "verdicts": draw_verdicts, "pass_at_1": draw_pass_at_1, "loss": draw_loss}
    paths = {}
    for name, draw in drawers.items():
        figure = new_figure()
        draw(figure, arms)
        paths[name] = output_dir / f"{name}.png"
        figure.savefig(paths[name], dpi=DPI)  # no bbox_inches="tight": every picture keeps exactly SIZE * DPI
    return paths


def new_figure() -> Figure:
    figure = Figure(figsize=SIZE, dpi=DPI, layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def draw_funnel(figure: Figure, arms: Sequence[Arm]) -> None:
    figure.suptitle("Rows through each stage, per round")
    last = max((entry.round for arm in arms for entry in arm.rounds), default=0)
    partial = False
    axes, spare = panels(figure, len(arms))
    for ax, arm in zip(axes, arms):
        ax.set_title(arm.label, fontsize=10)
        ax.set_xticks(range(len(FUNNEL)), FUNNEL, rotation=30, ha="right", fontsize=8)
        if not arm.rounds:
            placeholder(ax, "no rounds yet")
        width = 0.8 / max(len(arm.rounds), 1)
        for i, entry in enumerate(arm.rounds):
            offset = (i - (len(arm.rounds) - 1) / 2) * width
            heights = [entry.counts.get(step, 0) for step in FUNNEL]
            bars = ax.bar(
                [k + offset for k in range(len(FUNNEL))], heights, width, color=round_color(entry.round, last)
            )
            for bar, step in zip(bars, FUNNEL):
                if step in entry.partial:
                    bar.set_hatch("///")
                    partial = True
        ax.grid(axis="y", alpha=0.3)
    figure.axes[0].set_ylabel("rows")
    handles = [Patch(color=round_color(r, last), label=f"round {r}") for r in rounds_of(arms)]
    if partial:
        handles.append(Patch(facecolor="white", edgecolor="black", hatch="///", label="partial (stage unfinished)"))
    add_legend(figure, spare, handles)


def draw_verdicts(figure: Figure, arms: Sequence[Arm]) -> None:
    figure.suptitle("Execution verdicts per round")
    order = verdict_order(entry for arm in arms for entry in arm.rounds)
    axes, spare = panels(figure, len(arms))
    for ax, arm in zip(axes, arms):
        ax.set_title(arm.label, fontsize=10)
        rounds = [entry.round for entry in arm.rounds]
        bottoms = [0] * len(rounds)
        for verdict in order:
            heights = [entry.verdicts.get(verdict, 0) for entry in arm.rounds]
            ax.bar(rounds, heights, 0.6, bottom=bottoms, color=VERDICT_COLORS.get(verdict, OTHER_COLOR))
            bottoms = [b + h for b, h in zip(bottoms, heights)]
        for entry, top in zip(arm.rounds, bottoms):
            if not entry.verdicts:
                ax.text(entry.round, 0, "not executed", rotation=90, ha="center", va="bottom", fontsize=8, color="gray")
            elif "executed" in entry.partial:
                ax.text(entry.round, top, "unfinished", ha="center", va="bottom", fontsize=8, color="gray")
        if rounds:
            ax.set_xticks(rounds, [f"round {r}" for r in rounds], fontsize=8)
        else:
            placeholder(ax, "no rounds yet")
        ax.grid(axis="y", alpha=0.3)
    figure.axes[0].set_ylabel("rows")
    handles = [Patch(color=VERDICT_COLORS.get(verdict, OTHER_COLOR), label=verdict) for verdict in order]
    add_legend(figure, spare, handles)


def draw_pass_at_1(figure: Figure, arms: Sequence[Arm]) -> None:
    ax = figure.subplots()
    ax.set_title("pass@1 by round (base model = round -1)")
    rounds = rounds_of(arms)
    top, written, ringed = 0.0, set(), False
    for i, arm in enumerate(arms):
        points = [(-1, arm.base_pass_at_1)] + [(entry.round, entry.pass_at_1) for entry in arm.rounds]
        xs = [x for x, _ in points]
        ys = [math.nan if y is None else y for _, y in points]  # NaN breaks the line where a score is missing
        color, marker = ARM_COLORS[i % len(ARM_COLORS)], ARM_MARKERS[i % len(ARM_MARKERS)]
        ax.plot(xs, ys, marker=marker, color=color, label=arm.label, linewidth=2, markersize=7)
        for x, y in points:
            if y is not None and (x, f"{y:.3f}") not in written:  # an equal score is printed once
                written.add((x, f"{y:.3f}"))
                top = max(top, y)
                # Arms alternate above and below their points so close scores don't print over each other.
                ax.annotate(f"{y:.3f}", (x, y), textcoords="offset points", xytext=(0, 8 if i % 2 == 0 else -15),
                            ha="center", fontsize=8, color=color)  # fmt: skip
        back = [(e.round, e.pass_at_1) for e in arm.rounds if e.rolled_back and e.pass_at_1 is not None]
        if back:
            ax.scatter(*zip(*back), s=160, facecolors="none", edgecolors="red", linewidths=2, zorder=3,
                       label=None if ringed else "rolled back")  # fmt: skip
            ringed = True
    ax.set_xticks([-1, *rounds], ["base", *(f"round {r}" for r in rounds)])
    ax.set_xlim(-1.5, max(rounds, default=0) + 0.5)
    ax.set_ylim(0, min(1.0, top * 1.25 + 0.05))
    ax.set_ylabel("pass@1")
    ax.grid(alpha=0.3)
    if not any(arm.base_pass_at_1 is not None or any(e.pass_at_1 is not None for e in arm.rounds) for arm in arms):
        placeholder(ax, "no pass@1 yet")
    if arms:
        ax.legend(loc="best", fontsize=9)


def draw_loss(figure: Figure, arms: Sequence[Arm]) -> None:
    ax = figure.subplots()
    ax.set_title("Training loss (shade changes at each round; dotted line = round start)")
    for i, arm in enumerate(arms):
        color = ARM_COLORS[i % len(ARM_COLORS)]
        segments = loss_segments(arm)
        for k, (r, steps, losses) in enumerate(segments):
            shade = color if k % 2 == 0 else lighten(color, 0.45)
            label = arm.label if k == 0 else None
            if len(steps) > SMOOTH_ABOVE:
                ax.plot(steps, losses, color=shade, alpha=0.25, linewidth=0.8)
                ax.plot(steps, smooth(losses), color=shade, linewidth=1.8, label=label)
            else:
                ax.plot(steps, losses, color=shade, linewidth=1.5, marker=".", markersize=3, label=label)
            if k > 0:
                ax.axvline(steps[0], color=color, linestyle=":", linewidth=1)
            # At the bottom: loss falls within a round, so the bottom at a round's start is usually empty.
            ax.annotate("?" if r is None else f"r{r}", (steps[0], 0.0), xycoords=("data", "axes fraction"),
                        xytext=(3, 4 + 11 * i), textcoords="offset points", fontsize=8, color=color)  # fmt: skip
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("train/loss")
    ax.grid(alpha=0.3)
    if any(arm.loss for arm in arms):
        ax.legend(loc="upper right", fontsize=9)
    else:
        ax.set_xticks([])
        ax.set_yticks([])
        placeholder(ax, "no training logs yet")


def loss_segments(arm: Arm) -> list[tuple[int | None, list[int], list[float]]]:
    """Consecutive runs of loss points of the same round."""
    segments: list[tuple[int | None, list[int], list[float]]] = []
    for point in arm.loss:
        if not segments or segments[-1][0] != point.round:
            segments.append((point.round, [], []))
        segments[-1][1].append(point.step)
        segments[-1][2].append(point.loss)
    return segments


def smooth(values: Sequence[float], weight: float = 0.9) -> list[float]:
    """Exponential moving average, as TensorBoard's smoothing slider draws it."""
    out, last = [], values[0]
    for value in values:
        last = weight * last + (1 - weight) * value
        out.append(last)
    return out


def panels(figure: Figure, n: int) -> tuple[list[Axes], list[Axes]]:
    """One panel per arm, two to a row, sharing the y axis so arms compare by height; and the unused panels."""
    n = max(n, 1)
    cols = min(n, 2)
    axes = list(figure.subplots(math.ceil(n / cols), cols, sharey=True, squeeze=False).ravel())
    for extra in axes[n:]:
        extra.axis("off")
    return axes[:n], axes[n:]


def add_legend(figure: Figure, spare: list[Axes], handles: list[Patch]) -> None:
    """In an unused panel when the grid has one, else outside the panels, where it covers no bar."""
    if spare:
        spare[0].legend(handles=handles, loc="center", fontsize=9)
    elif handles:
        figure.legend(handles=handles, loc="outside right upper", fontsize=8)


def placeholder(ax: Axes, text: str) -> None:
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=12, color="gray")


def rounds_of(arms: Sequence[Arm]) -> list[int]:
    return sorted({entry.round for arm in arms for entry in arm.rounds})


def round_color(r: int, last: int) -> tuple[float, float, float]:
    """Later rounds darker, on one blue-green scale, the same round the same color in every arm."""
    from matplotlib import colormaps

    red, green, blue, _ = colormaps["viridis"](0.85 - 0.75 * (r / last if last else 0))
    return red, green, blue


def lighten(color: str, amount: float) -> tuple[float, float, float]:
    red, green, blue = to_rgb(color)
    return red + (1 - red) * amount, green + (1 - green) * amount, blue + (1 - blue) * amount
