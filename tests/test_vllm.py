"""The vLLM engine on a real GPU (skipped where vllm or CUDA is missing): runs ``scripts/vllm_smoke.py``."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

SMOKE = Path(__file__).resolve().parents[1] / "scripts" / "vllm_smoke.py"


def _has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


@pytest.mark.vllm
@pytest.mark.gpu
@pytest.mark.skipif(importlib.util.find_spec("vllm") is None, reason="vllm is not installed (pip install '.[vllm]')")
@pytest.mark.skipif(not _has_cuda(), reason="no CUDA GPU")
@pytest.mark.timeout(900)
def test_vllm_engine_is_deterministic_per_row_and_runs_a_stage(tmp_path):
    report = tmp_path / "report.json"
    command = [sys.executable, str(SMOKE), "--rows=32", "--max_new_tokens=32", "--no-hf_baseline", f"--report={report}"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=880)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    data = json.loads(report.read_text())
    assert data["same_after_reordering"] and data["same_alone_as_in_a_batch"]
    assert data["stage"]["samples"] == 32 and data["vllm_tokens"] > 0


def test_vllm_missing_is_a_user_error_not_an_import_error(monkeypatch):
    from lightning_selfalign.engines import load_engine
    from lightning_selfalign.errors import UserError

    monkeypatch.setitem(sys.modules, "vllm", None)
    with pytest.raises(UserError, match="--engine vllm needs vLLM"):
        load_engine("vllm", "x")
