"""``selfalign report`` on hand-built work directories: two complete arms, a partial run, the CLI and its errors,
and (where Chromium is installed) the page as a browser draws it."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
from pathlib import Path

import pytest

from lightning_selfalign.cli import main
from lightning_selfalign.report import write_report
from lightning_selfalign.report.plots import DPI, SIZE

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
PLOTS = ("funnel.png", "verdicts.png", "pass_at_1.png", "loss.png")
COUNTS = {"seeds": 40, "concepts": 38, "instructions": 36, "responses": 120, "executed": 120, "curated": 30}
METRIC_COLUMNS = ["epoch", "step", "train/grad_norm", "train/loss", "train/lr", "train/micro_loss", "val/loss"]


def write_json(path: Path, value: object) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(value, indent=2), encoding="utf-8")


def write_rows(path: Path, rows: list[dict], torn_tail: str = "") -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows) + torn_tail, encoding="utf-8")


def executed_rows(round: int, passed: int) -> list[dict]:
    """120 executed rows: ``passed`` pass, the rest fail / error / timeout with multi-line reasons."""
    others = [
        ("fail", "AssertionError: expected 3, got 4\n  File 'x.py'"),
        ("error", "NameError: name 'y' is not defined"),
        ("timeout", "wall clock limit 10.0s"),
    ]
    rows = [{"id": f"{round}-{i}", "verdict": "pass", "reason": ""} for i in range(passed)]
    for i in range(COUNTS["executed"] - passed):
        verdict, reason = others[i % len(others)]
        rows.append({"id": f"{round}-x{i}", "verdict": verdict, "reason": reason})
    return rows


def write_round(workdir: Path, r: int, passed: int, stage: str = "evaluated", score: float | None = None) -> dict:
    folder = workdir / f"round-{r}"
    for name in ("seeds", "concepts", "instructions", "responses"):
        write_rows(folder / f"{name}.jsonl", [{"id": f"{name}-{i}"} for i in range(COUNTS[name])])
    write_json(
        folder / "responses.stats.json", {"stage": "responses", "totals": {"kept": 120, "dropped": {"no_code": 7}}}
    )
    generated = {k: v for k, v in COUNTS.items() if k in ("seeds", "concepts", "instructions", "responses")}
    entry = {"stage": stage, "counts": generated, "rolled_back": False}
    if stage == "evaluated":
        write_rows(folder / "executed.jsonl", executed_rows(r, passed))
        write_rows(folder / "sft.jsonl", [{"id": str(i)} for i in range(COUNTS["curated"])])
        write_json(folder / "sft.stats.json", {"rows_in": 120, "rows_out": 30, "dropped": {"dedup": {"duplicate": 9}}})
        write_json(folder / "humaneval.json", {"pass@1": score, "n": 1})
        entry.update(counts=dict(COUNTS), global_step=150 * (r + 1), **{"pass@1": score})
    return entry


def write_metrics(workdir: Path, rounds: int, floor: float) -> None:
    """A killed run (version_0) and its resume (version_1), which repeats steps 140-149 with other values."""
    logs = workdir / "train" / "lightning_logs"
    rows = {0: [], 1: []}
    for step in range(150 * rounds):
        loss = 2.0 * math.exp(-step / 120) + floor + 0.05 * math.sin(step)
        rows[1 if step >= 140 else 0].append({"epoch": step // 150, "step": step, "train/loss": loss, "train/lr": 1e-3})
        if step % 50 == 49:  # validation rows have no train/loss
            rows[1 if step >= 140 else 0].append({"epoch": step // 150, "step": step, "val/loss": 1.0})
    rows[0] += [{"epoch": 0, "step": s, "train/loss": 99.0} for s in range(140, 146)]
    for version, version_rows in rows.items():
        path = logs / f"version_{version}" / "metrics.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, METRIC_COLUMNS)
            writer.writeheader()
            writer.writerows(version_rows)


def make_arm(root: Path, name: str, scores: tuple[float, float], execution_filter: bool) -> Path:
    workdir = root / name
    rounds = {str(r): write_round(workdir, r, passed=60 + 20 * r, score=score) for r, score in enumerate(scores)}
    rounds["1"]["rolled_back"] = scores[1] < scores[0]
    write_json(workdir / "state.json", {"version": 1, "base": {"model": "tiny", "pass@1": 0.125}, "rounds": rounds,
                                        "events": []})  # fmt: skip
    write_json(workdir / "settings.json", {"model": "tiny", "rounds": 2, "epochs_per_round": 1,
                                           "generation": {"n": 3}, "execution_filter": execution_filter})  # fmt: skip
    write_metrics(workdir, rounds=2, floor=0.5 if execution_filter else 0.8)
    return workdir


def make_partial(root: Path) -> Path:
    """Round 0 done, round 1 killed while executing (torn last line), 3 rounds planned, no logs, no base score."""
    workdir = root / "partial"
    rounds = {"0": write_round(workdir, 0, passed=50, score=0.25), "1": write_round(workdir, 1, 0, stage="responses")}
    write_rows(workdir / "round-1" / "executed.jsonl", executed_rows(1, 10)[:25], torn_tail='{"id": "1-x9", "ver')
    write_json(workdir / "state.json", {"version": 1, "base": {}, "rounds": rounds, "events": []})
    write_json(workdir / "settings.json", {"model": "tiny", "rounds": 3, "generation": {"n": 3}})
    return workdir


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR", f"{path}: first chunk is not IHDR"
    return int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")


@pytest.fixture
def two_arms(tmp_path: Path) -> list[Path]:
    return [
        make_arm(tmp_path, "filtered", (0.25, 0.375), True),
        make_arm(tmp_path, "unfiltered", (0.1875, 0.0625), False),
    ]


def test_two_arms_give_pictures_and_numbers(two_arms, tmp_path):
    report = write_report(two_arms, tmp_path / "out", labels=["execution-filtered", "unfiltered"])
    assert report == tmp_path / "out" / "report.html"
    page = report.read_text(encoding="utf-8")
    for name in PLOTS:
        path = report.parent / name
        assert png_size(path) == (int(SIZE[0] * DPI), int(SIZE[1] * DPI))
        assert path.stat().st_size > 5_000, f"{name} is nearly empty"
        assert f'src="{name}"' in page
    for score in ("0.125", "0.250", "0.375", "0.188", "0.062 (rolled back)"):
        assert f">{score}</td>" in page
    assert "execution-filtered" in page and "off (unfiltered ablation)" in page
    assert "AssertionError: expected 3, got 4" in page and "File &#x27;x.py&#x27;" not in page  # first line only
    assert "responses: no_code" in page and "curate/dedup: duplicate" in page
    assert "<script" not in page and "http" not in page  # self-contained


def test_resumed_logs_merge_with_the_later_version_winning(two_arms):
    from lightning_selfalign.report.collect import collect_arm

    arm = collect_arm(two_arms[0], "a")
    steps = [point.step for point in arm.loss]
    assert steps == sorted(set(steps)) and len(steps) == 300
    assert max(point.loss for point in arm.loss) < 99, "the killed run's rows for steps 140-145 must be replaced"
    assert {point.round for point in arm.loss if point.step < 150} == {0}
    assert {point.round for point in arm.loss if point.step >= 150} == {1}


def test_partial_run_still_gives_a_report(tmp_path):
    workdir = make_partial(tmp_path)
    report = write_report([workdir])
    assert report == workdir / "report" / "report.html"
    page = report.read_text(encoding="utf-8")
    for name in PLOTS:
        assert png_size(report.parent / name) == (800, 450)
    assert "round 1: stopped at &#x27;responses&#x27;" in page
    assert "no training logs yet" in page
    assert "base model: no pass@1" in page
    assert "rounds not started: 2 (of 3 planned)" in page
    assert "read only up to a bad line" in page
    assert "25*" in page, "the unfinished round's executed rows are counted, marked partial"


def test_tensorboard_only_logs_name_the_fix(tmp_path):
    workdir = make_partial(tmp_path)
    events = workdir / "train" / "lightning_logs" / "version_0" / "events.out.tfevents.1.host"
    events.parent.mkdir(parents=True)
    events.write_bytes(b"\0")
    page = write_report([workdir]).read_text(encoding="utf-8")
    assert "--trainer.logger=lightning.pytorch.loggers.CSVLogger --trainer.logger.save_dir=" in page


def test_a_workdir_with_only_state_json(tmp_path):
    write_json(tmp_path / "bare" / "state.json", {"version": 1, "base": {}, "rounds": {}, "events": []})
    page = write_report([tmp_path / "bare"]).read_text(encoding="utf-8")
    assert "settings.json: no such file" in page and "no round started" in page


def test_cli_prints_the_report_path(two_arms, capsys):
    main(["report", "--workdir", str(two_arms[0])])
    assert capsys.readouterr().out.strip() == str(two_arms[0] / "report" / "report.html")
    out = two_arms[0] / "both"
    main(["report", "--workdir", f"[{two_arms[0]},{two_arms[1]}]", "--output_dir", str(out), "--labels", "[A,B]"])
    assert capsys.readouterr().out.strip() == str(out / "report.html")
    assert "<th>A</th><th>B</th>" in (out / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize("problem", ["missing", "no_state"])
def test_cli_refuses_a_workdir_that_is_not_a_run(problem, tmp_path, capsys):
    workdir = tmp_path / "run"
    if problem == "no_state":
        workdir.mkdir()
    with pytest.raises(SystemExit) as exit_info:
        main(["report", "--workdir", str(workdir)])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: --workdir {workdir}: ")


def test_cli_refuses_labels_of_the_wrong_length(two_arms, capsys):
    with pytest.raises(SystemExit):
        main(["report", "--workdir", str(two_arms[0]), "--labels", "[a,b]"])
    assert capsys.readouterr().err.strip() == "error: --labels: 2 label(s) for 1 --workdir; give one label per workdir"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(CHROMIUM is None, reason="no chromium binary on PATH (apt-get install chromium)")
def test_headless_chromium_draws_the_page(two_arms, tmp_path):
    report = write_report(two_arms, tmp_path / "out")
    shot = tmp_path / "shot.png"
    subprocess.run(
        [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
         f"--screenshot={shot}", "--window-size=1200,2000", report.as_uri()],
        capture_output=True, timeout=120, check=False,
    )  # fmt: skip
    assert png_size(shot) == (1200, 2000)
    # A blank page is ~10 KB; the pictures' colors (not only text) make it large. Their colored pixels show
    # that the relative <img> paths resolved.
    assert shot.stat().st_size > 100_000, f"screenshot is {shot.stat().st_size} bytes: the page looks blank"
    from matplotlib.image import imread

    pixels = imread(shot)[..., :3]
    colored = (pixels.max(axis=-1) - pixels.min(axis=-1) > 0.3).mean()
    assert colored > 0.01, f"only {colored:.2%} colored pixels: the plots did not load"
