"""``--executor ray`` against a local Ray instance: batches go to a per-node sandbox executor."""

from __future__ import annotations

import json

import pytest

ray = pytest.importorskip("ray", reason="ray is not installed (pip install 'lightning-selfalign[ray]')")

pytestmark = pytest.mark.ray


@pytest.mark.timeout(120)
def test_ray_executor_matches_local(tmp_path):
    from lightning_selfalign.sandbox.batch import execute_rows
    from lightning_selfalign.sandbox.ray_executor import execute_rows_ray
    from lightning_selfalign.sandbox.types import Limits

    rows = [{"id": f"r{i}", "code": f"x = {i}", "tests": f"assert x % 3 != {i % 4}", "keep": i} for i in range(150)]
    rows.append({"id": "loop", "code": "while True:\n    pass", "tests": "assert True"})
    limits = Limits(timeout_s=1.0)
    local = tmp_path / "local.jsonl"
    execute_rows(rows, local, limits, workers=1, progress=False, retry_timeouts=False)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        out = tmp_path / "ray.jsonl"
        stats = execute_rows_ray(rows[:100], out, limits, workers=1, progress=False)
        assert stats["nodes"] == 1 and stats["rows_out"] == 100
        resumed = execute_rows_ray(rows, out, limits, workers=1, progress=False)
        assert resumed["skipped"] == {"already_done": 100} and resumed["rows_out"] == len(rows) - 100
    finally:
        ray.shutdown()
    got = [json.loads(line) for line in out.read_text().splitlines()]
    assert sorted(r["id"] for r in got) == sorted(r["id"] for r in rows)
    expected = {r["id"]: r["verdict"] for r in map(json.loads, local.read_text().splitlines())}
    assert {r["id"]: r["verdict"] for r in got} == expected
    assert all(r["keep"] == int(r["id"][1:]) for r in got if r["id"] != "loop")
