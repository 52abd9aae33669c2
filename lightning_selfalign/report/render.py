"""``report.html`` from the collected arms and their pictures: the page shell is ``template.html``; the sections
(arms, what is missing, pass@1, funnel, verdicts, dropped rows, loss) are built here, every text from a file
escaped. The page is self-contained: no scripts, no external styles or fonts, pictures by relative path.
"""

from __future__ import annotations

import html
import re
import time
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from string import Template

from lightning_selfalign.report.collect import FUNNEL, Arm, verdict_order
from lightning_selfalign.rounds.state import STAGES

TEMPLATE = Path(__file__).with_name("template.html")
TOP_REASONS = 12
CAPTIONS = {
    "pass_at_1": "pass@1 (greedy) of each round's model on the arm's benchmark, one line per arm; the base model "
    "is round -1. A gap in a line is a round without a score; a red ring marks a round that was rolled back.",
    "funnel": "Rows that came through each stage, one bar per round: seeds mined, concepts, instructions and "
    "responses generated, responses executed, responses whose tests passed, and rows kept by curation. "
    "Hatched bars were counted from a stage's file while the stage was unfinished.",
    "verdicts": "What the sandbox said about every executed response, stacked per round.",
    "loss": "Training loss per optimizer step, one color per arm; the shade alternates and a dotted line "
    "marks where each round starts (labelled rN at the bottom). Long rounds show a smoothed line over the raw one.",
}
NUMBER = re.compile(r"-?[\d.]+[%*]?")  # scores, rates and partial counts line up right like numbers
Cell = str | int | float | None


def render_html(arms: Sequence[Arm], plots: dict[str, Path], output: Path) -> Path:
    """Write ``output`` (report.html) next to the pictures in ``plots``."""
    sections = [
        arms_section(arms),
        missing_section(arms),
        section("pass@1", figure(plots["pass_at_1"], "pass_at_1"), pass_table(arms)),
        section("Rows through the stages", figure(plots["funnel"], "funnel"), *per_arm(arms, funnel_table)),
        section("Execution verdicts", figure(plots["verdicts"], "verdicts"), *per_arm(arms, verdict_tables)),
        section("Dropped rows by reason", *per_arm(arms, drops_table)),
        section("Training loss", figure(plots["loss"], "loss"), loss_table(arms)),
    ]
    page = Template(TEMPLATE.read_text(encoding="utf-8")).substitute(
        title="Self-align report",
        generated=html.escape(time.strftime("%Y-%m-%d %H:%M:%S")),
        sources=", ".join(f"<code>{html.escape(str(arm.workdir))}</code>" for arm in arms),
        body="\n".join(sections),
    )
    output.write_text(page, encoding="utf-8")
    return output


def arms_section(arms: Sequence[Arm]) -> str:
    facts: dict[str, list[Cell]] = {"work directory": [str(arm.workdir) for arm in arms]}
    for i, arm in enumerate(arms):
        for name, value in arm.summary().items():
            facts.setdefault(name, [None] * len(arms))[i] = value
    facts["last round reached"] = [last_stage(arm) for arm in arms]
    rows = [[name, *values] for name, values in facts.items()]
    return section("Arms", table(["", *(arm.label for arm in arms)], rows))


def last_stage(arm: Arm) -> str:
    if not arm.rounds:
        return "no round started"
    entry = arm.rounds[-1]
    stage = entry.stage or "unknown"
    position = f" ({STAGES.index(stage) + 1}/{len(STAGES)})" if stage in STAGES else ""
    return f"round {entry.round}: {stage}{position}"


def missing_section(arms: Sequence[Arm]) -> str:
    parts = []
    for arm in arms:
        if arm.missing:
            items = "".join(f"<li>{html.escape(note)}</li>" for note in arm.missing)
            parts.append(f"<h3>{html.escape(arm.label)}</h3><ul>{items}</ul>")
    if not parts:
        return section("Missing", "<p>Nothing: every round of every arm is complete.</p>")
    return section("Missing", f'<div class="missing">{"".join(parts)}</div>')


def pass_table(arms: Sequence[Arm]) -> str:
    rounds = sorted({entry.round for arm in arms for entry in arm.rounds})
    rows: list[list[Cell]] = [["base", *(score(arm.base_pass_at_1) for arm in arms)]]
    for r in rounds:
        cells: list[Cell] = [f"round {r}"]
        for arm in arms:
            entry = next((e for e in arm.rounds if e.round == r), None)
            text = score(entry.pass_at_1) if entry else None
            cells.append(f"{text} (rolled back)" if entry and entry.rolled_back and text else text)
        rows.append(cells)
    return table(["model", *(arm.label for arm in arms)], rows)


def funnel_table(arm: Arm) -> str:
    rows = []
    for entry in arm.rounds:
        counts = [f"{entry.counts[step]}*" if step in entry.partial else entry.counts.get(step) for step in FUNNEL]
        rows.append([entry.round, entry.stage or "?", *counts])
    note = "<p>* counted from the stage's file; the stage had not finished.</p>" if any_partial(arm) else ""
    return table(["round", "stage reached", *FUNNEL], rows) + note


def verdict_tables(arm: Arm) -> str:
    order = verdict_order(arm.rounds)
    rows = []
    for entry in arm.rounds:
        total = sum(entry.verdicts.values())
        rate = f"{entry.verdicts.get('pass', 0) / total:.1%}" if total else None
        rows.append([entry.round, *(entry.verdicts.get(v, 0) if total else None for v in order), total or None, rate])
    counts = table(["round", *order, "executed", "pass rate"], rows)
    return counts + reasons_table(arm)


def reasons_table(arm: Arm) -> str:
    """The commonest failure reasons over all rounds, with the rounds each came from."""
    total: Counter = Counter()
    for entry in arm.rounds:
        total.update(entry.reasons)
    if not total:
        return '<p class="none">No failure reasons recorded.</p>'
    rows = []
    for reason, count in total.most_common(TOP_REASONS):
        per_round = ", ".join(f"r{e.round}: {e.reasons[reason]}" for e in arm.rounds if e.reasons.get(reason))
        rows.append([reason, count, per_round])
    shown = f"top {TOP_REASONS} of {len(total)}" if len(total) > TOP_REASONS else f"all {len(total)}"
    heading = f"<p>Most common failure reasons (first line of each; {shown}):</p>"
    return heading + table(["reason", "rows", "by round"], rows)


def drops_table(arm: Arm) -> str:
    reasons = sorted({reason for entry in arm.rounds for reason in entry.drops})
    if not reasons:
        return '<p class="none">No drop counts found (no stats files).</p>'
    rows = [[reason, *(entry.drops.get(reason) for entry in arm.rounds)] for reason in reasons]
    return table(["stage: reason", *(f"round {entry.round}" for entry in arm.rounds)], rows)


def loss_table(arms: Sequence[Arm]) -> str:
    rows = []
    for arm in arms:
        for r in sorted({p.round for p in arm.loss}, key=lambda r: -1 if r is None else r):
            losses = [p for p in arm.loss if p.round == r]
            rows.append([arm.label, "?" if r is None else r, f"{losses[0].step}-{losses[-1].step}", len(losses),
                         loss(losses[0].loss), loss(losses[-1].loss), loss(min(p.loss for p in losses))])  # fmt: skip
    if not rows:
        return '<p class="none">No training loss logged yet.</p>'
    return table(["arm", "round", "steps", "logged", "first loss", "last loss", "lowest loss"], rows)


def per_arm(arms: Sequence[Arm], build) -> list[str]:
    """One table per arm, under the arm's name when there are several."""
    if len(arms) == 1:
        return [build(arms[0])]
    return [f"<h3>{html.escape(arm.label)}</h3>{build(arm)}" for arm in arms]


def section(title: str, *parts: str) -> str:
    return f"<section>\n<h2>{html.escape(title)}</h2>\n" + "\n".join(parts) + "\n</section>"


def figure(path: Path, name: str) -> str:
    return (
        f'<figure><img src="{html.escape(path.name)}" alt="{html.escape(name)} plot" width="800" height="450">'
        f"<figcaption>{html.escape(CAPTIONS[name])}</figcaption></figure>"
    )


def table(headers: Sequence[Cell], rows: Sequence[Sequence[Cell]]) -> str:
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in headers)
    body = "".join("<tr>" + "".join(td(value) for value in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def td(value: Cell) -> str:
    if value is None:
        return '<td class="num none">—</td>'
    if isinstance(value, (int, float)) or NUMBER.fullmatch(value):
        return f'<td class="num">{html.escape(str(value))}</td>'
    return f"<td>{html.escape(value)}</td>"


def score(value: float | None) -> str | None:
    return None if value is None else f"{value:.3f}"


def loss(value: float) -> str:
    return f"{value:.4f}"


def any_partial(arm: Arm) -> bool:
    return any(entry.partial for entry in arm.rounds)
