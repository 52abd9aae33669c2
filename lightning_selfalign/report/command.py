"""``selfalign report``: :func:`write_report` (the library function) and :func:`report_command` (its CLI)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from lightning_selfalign.errors import UserError
from lightning_selfalign.report.collect import collect_arm
from lightning_selfalign.report.render import render_html


def write_report(
    workdirs: Sequence[str | Path], output_dir: str | Path | None = None, labels: Sequence[str] | None = None
) -> Path:
    """Write ``report.html`` and its PNG pictures for one or more self-align work directories (one arm each).

    Plots what exists and lists what is missing: a run killed mid-round, a round without evaluation or a work
    directory without training logs still gives a report. Returns the path of report.html (default folder:
    ``<first workdir>/report/``)."""
    from lightning_selfalign.report.plots import write_plots  # matplotlib only when drawing

    folders = [Path(workdir) for workdir in workdirs]
    names = arm_labels(folders, labels)
    output = Path(output_dir) if output_dir is not None else folders[0] / "report"
    output.mkdir(parents=True, exist_ok=True)
    arms = [collect_arm(folder, name) for folder, name in zip(folders, names)]
    return render_html(arms, write_plots(arms, output), output / "report.html")


def arm_labels(workdirs: Sequence[Path], labels: Sequence[str] | None) -> list[str]:
    """``labels`` as given, else each folder's name; repeated names get " (2)", " (3)" so legends stay apart."""
    if not workdirs:
        raise UserError("--workdir: give at least one self-align work directory")
    if labels is not None and len(labels) != len(workdirs):
        raise UserError(f"--labels: {len(labels)} label(s) for {len(workdirs)} --workdir; give one label per workdir")
    names = list(labels) if labels is not None else [workdir.resolve().name or str(workdir) for workdir in workdirs]
    unique: list[str] = []
    for name in names:
        candidate, k = name, 2
        while candidate in unique:
            candidate, k = f"{name} ({k})", k + 1
        unique.append(candidate)
    return unique


def report_command(*, workdir: str | list[str], output_dir: str | None = None, labels: str | list[str] | None = None):
    """report.html and PNG plots of one or more self-align runs, compared as arms.

    Shows rows through every stage, execution verdicts and failure reasons, pass@1 by round (the base model as
    round -1) and training loss, and prints the path of report.html. A partial run (killed mid-round, no
    evaluation, no training logs yet) still gets a report that says what is missing.

    Args:
        workdir: self-align work directory (holds state.json), or several to compare as arms:
            --workdir '[runs/filtered,runs/unfiltered]' or --workdir runs/filtered --workdir+ runs/unfiltered
            (a second plain --workdir replaces the first).
        output_dir: folder for report.html and the PNGs (default: WORKDIR/report, of the first workdir).
        labels: one name per workdir for legends and tables, in the same order (default: each folder's name),
            e.g. --labels '[execution-filtered,unfiltered]'.
    """
    workdirs = [workdir] if isinstance(workdir, str) else list(workdir)
    names = [labels] if isinstance(labels, str) else labels
    for folder in map(Path, workdirs):
        if not folder.is_dir():
            raise UserError(f"--workdir {folder}: no such directory")
        if not (folder / "state.json").is_file():
            raise UserError(f"--workdir {folder}: no state.json; give the --workdir of a selfalign self-align run")
    path = write_report(workdirs, output_dir, names)
    print(path)
    return str(path)
