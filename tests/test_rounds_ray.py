"""The Ray executor in rounds: ``--execution.executor local|ray`` and ``--execution.ray_address`` parse, travel through
``settings.json`` to the between-rounds worker, and fail with one line when ray is missing; with ray installed (the
``ray`` marker) a round's execution filter on a local Ray instance keeps the verdicts of the local executor.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from lightning_selfalign.cli import main
from lightning_selfalign.options import ExecutionOptions
from lightning_selfalign.rounds import RoundPaths, RoundSettings, execute_round, load_settings
from lightning_selfalign.rounds.settings import save_settings

REPO = Path(__file__).resolve().parents[1]
HAS_RAY = importlib.util.find_spec("ray") is not None
TRAIN_CONFIG = str(REPO / "configs" / "tiny-cpu.yaml")


def self_align_error(capsys, *flags: str) -> str:
    """The one line ``selfalign self-align`` prints for a user mistake, before any work (exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["self-align", "--model=unused", f"--train_config={TRAIN_CONFIG}", *flags])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


@pytest.mark.skipif(HAS_RAY, reason="checks the error shown when ray is not installed")
def test_ray_executor_without_ray_is_one_line_error(capsys):
    err = self_align_error(capsys, "--execution.executor=ray", "--execution.ray_address=ray://head:10001")
    assert "--execution.executor ray needs ray" in err and "pip install 'lightning-selfalign[ray]'" in err


def test_executor_options_are_checked_by_flag(capsys):
    err = self_align_error(capsys, "--execution.executor=dask")
    assert 'key "executor"' in err and "Literal['local', 'ray']" in err and "dask" in err
    err = self_align_error(capsys, "--execution.ray_address=ray://head:10001")
    assert "--execution.ray_address is for the ray executor: add --execution.executor ray" in err


def test_executor_travels_to_the_worker_through_settings_json(tmp_path):
    settings = RoundSettings(model="m", train_config=TRAIN_CONFIG,
                             execution=ExecutionOptions(executor="ray", ray_address="ray://head:10001"))  # fmt: skip
    save_settings(tmp_path, settings)
    loaded = load_settings(tmp_path)
    assert (loaded.execution.executor, loaded.execution.ray_address) == ("ray", "ray://head:10001")
    assert ExecutionOptions().executor == "local"


def _responses(paths: RoundPaths) -> list[dict]:
    rows = [{"id": f"r{i}", "code": f"x = {i}", "tests": f"assert x % 3 != {i % 4}"} for i in range(40)]
    paths.dir.mkdir(parents=True, exist_ok=True)
    paths.responses.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return rows


@pytest.mark.ray
@pytest.mark.timeout(180)
@pytest.mark.skipif(not HAS_RAY, reason="ray is not installed (pip install 'lightning-selfalign[ray]')")
def test_round_execution_on_ray_keeps_the_local_verdicts(tmp_path):
    import ray

    verdicts = {}
    for executor in ("local", "ray"):
        paths = RoundPaths(tmp_path / executor, 0)
        _responses(paths)
        settings = RoundSettings(model="m", train_config=TRAIN_CONFIG, progress=False,
                                 execution=ExecutionOptions(executor=executor, workers=1, timeout=2.0))  # fmt: skip
        if executor == "ray":
            ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
        try:
            assert execute_round(paths, settings) == 40
        finally:
            if executor == "ray":
                ray.shutdown()
        verdicts[executor] = {r["id"]: r["verdict"] for r in map(json.loads, paths.executed.read_text().splitlines())}
    assert verdicts["ray"] == verdicts["local"]
