"""Pretraining documents: the world as a base code model would have met it on the web.

Every corpus task gives a plain documented function, and one document in the pipeline's own stage formats
(rendered by :func:`lightning_selfalign.prompts.build_prompt` itself, zero-shot, so the base model knows exactly
the prompts the loop will show it): a function with its concepts, concepts with an instruction, or an
instruction with a response of reasoning, code and tests (which recompute the expected value from the description,
step by step). Responses carry realistic noise: some solutions are wrong (one step changed; their tests still follow
the description), some tests are wrong, and some asserts state a literal expected value. Optionally (``slip``) a
share of the corpus's code has a habit its tests do not: six operations written one constant too high.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from lightning_selfalign.jsonl import stable_id
from lightning_selfalign.prompts import Parts, build_prompt, get_format
from lightning_selfalign.prompts.formats import V1_END
from lightning_selfalign.toyworld.ops import OPS, VARIABLE, Step
from lightning_selfalign.toyworld.tasks import Task
from lightning_selfalign.toyworld.world import HELD_OUT_LENGTH, World

REASONING = (
    "The function applies the steps in order, one assignment per step, and returns the last value.",
    "Each step of the description becomes one line; the tests recompute the expected value in one expression.",
    "I follow the description step by step and keep the intermediate value in a variable.",
)
# How hard a task of so many steps is: what the instructions stage's drawn difficulty asks for.
DIFFICULTY = {1: "easy", 2: "easy", 3: "medium", 4: "hard"}
# The layout the committed base model was pretrained in (configs/self-align-toyworld-cpu.yaml generates in it).
PROMPT_FORMAT = "selfalign-v1"
# The operations a careless author writes with their constant one too high (``--pretrain_slip``): "add 3" as
# ``n + 4``. Together they are about one step in five of the benchmark's and the seed pool's tasks.
SLIP_OPS = ("add", "sub", "mul", "map_add", "map_mul", "append")
# The stub's body is a placeholder, so a prompt ending in a docstring is continued with a body, not a fence.
STUB_INSTRUCTION = "Implement this function:\n```python\n{prompt}    ...\n```"


@dataclass(frozen=True)
class Noise:
    """Shares of responses with a wrong solution, with wrong tests, and of asserts with a literal expectation."""

    wrong_code: float = 0.2
    wrong_tests: float = 0.10
    literal_assert: float = 0.2
    stub_instruction: float = 0.3


def in_share(tag: str, task: Task, share: float) -> bool:
    """True for the share ``share`` of tasks, chosen by a hash of ``tag`` and the task: no draw from a document's
    random generator, and a larger share keeps the smaller one's tasks."""
    return int(stable_id(tag, repr(task.key)), 16) % 10_000 < round(share * 10_000)


def slips(task: Task, slip: float) -> bool:
    """Whether the code of ``task`` is written with the slip (the share ``slip`` of tasks)."""
    return in_share("toyworld-slip", task, slip)


def written_code(task: Task, slip: float = 0.0) -> str:
    """The task's code as the corpus shows it: the reference, or (for the share ``slip`` of tasks) with each step of
    SLIP_OPS one constant too high while the docstring states the right one. Only code carries the slip: the
    tests in response documents recompute the expected value from the description, right."""
    if not slips(task, slip):
        return task.code()
    slipped = Task(task.name, tuple(
        Step(step.op, {**step.values, "k": step.values["k"] + 1}) if step.op.name in SLIP_OPS else step
        for step in task.steps
    ))  # fmt: skip
    return task.prompt() + slipped.body()


def perturb(task: Task, rng: random.Random) -> Task:
    """The task with one step replaced by another operation of the same types (or the same one, redrawn)."""
    index = rng.randrange(len(task.steps))
    step = task.steps[index]
    same_types = [op for op in OPS if op.source == step.op.source and op.target == step.op.target]
    changed = rng.choice(same_types).draw(rng)
    return Task(task.name, task.steps[:index] + (changed,) + task.steps[index + 1 :])


def instruction_text(task: Task, rng: random.Random, noise: Noise) -> str:
    if rng.random() < noise.stub_instruction:
        return STUB_INSTRUCTION.format(prompt=task.prompt())
    return f"Write a Python function `{task.signature()}`. {task.description()}"


def tests_text(task: Task, arguments: list, rng: random.Random, noise: Noise) -> str:
    """A loop over ``arguments`` recomputing the expected value step by step from the description, then asserting
    the function agrees; a share of responses add an assert of a literal expected value."""
    variable = VARIABLE[task.source]
    lines = [f"for {variable} in ({', '.join(repr(a) for a in arguments)},):", f"    expected = {variable}"]
    lines += [f"    expected = {step.expression('expected')}" for step in task.steps]
    lines.append(f"    assert {task.name}({variable}) == expected")
    if rng.random() < noise.literal_assert:
        try:
            argument = arguments[0]
            lines.append(f"assert {task.name}({argument!r}) == {task.function()(argument)!r}")
        except Exception:  # a perturbed chain may fail on this input: no literal then
            pass
    return "\n".join(lines)


def response_text(task: Task, cases: list, rng: random.Random, noise: Noise, slip: float = 0.0) -> str:
    code_task = perturb(task, rng) if rng.random() < noise.wrong_code else task
    tests_task = perturb(task, rng) if rng.random() < noise.wrong_tests else task
    arguments = [argument for argument, _ in cases[:3]]
    reasoning = rng.choice(REASONING)  # drawn before the tests, as the committed model's documents were
    tests = tests_text(tests_task, arguments, rng, noise)
    return get_format(PROMPT_FORMAT).render_response(Parts(reasoning, written_code(code_task, slip), "", tests))


def stage_document(stage: str, row: dict, answer: str, rng: random.Random) -> str:
    prompt = build_prompt(stage, row, rng=rng, chat=False, num_fewshot=0, prompt_format=PROMPT_FORMAT)
    assert prompt.text is not None, "completion mode renders text"
    return f"{prompt.text}{answer}\n{V1_END}"


def instructions_document(task: Task, rng: random.Random) -> str:
    """Concepts with the instruction that uses them, at the difficulty the task's length is."""
    row = {"id": task.name, "concepts": task.concepts(), "category": "function",
           "difficulty": DIFFICULTY[len(task.steps)]}  # fmt: skip
    return stage_document("instructions", row, instruction_text(task, rng, Noise(stub_instruction=0.0)), rng)


def shown_as_code(task: Task, long_code: float) -> bool:
    """Whether a corpus task is written out as code: every shorter task, and the share ``long_code`` of the
    held-out length's tasks (chosen by a hash of the task, so a larger share keeps the smaller one's tasks)."""
    if len(task.steps) < HELD_OUT_LENGTH:
        return True
    return in_share("toyworld-long-code", task, long_code)


def task_documents(
    task: Task, cases: list, rng: random.Random, noise: Noise, long_code: float = 1.0, slip: float = 0.0
) -> list[str]:
    """The plain function and one stage document for one corpus task; a task :func:`shown_as_code` leaves out
    gives its instruction document only (the base then knows such tasks are asked for, not how to write them)."""
    if not shown_as_code(task, long_code):
        return [instructions_document(task, rng)]
    code = written_code(task, slip)
    documents = [code]
    kind = rng.choice(("concepts", "instructions", "responses", "responses"))
    if kind == "concepts":
        answer = get_format(PROMPT_FORMAT).render_concepts(task.concepts())
        documents.append(stage_document(kind, {"id": task.name, "seed": code}, answer, rng))
    elif kind == "instructions":
        documents.append(instructions_document(task, rng))
    else:
        row = {"id": task.name, "instruction": instruction_text(task, rng, noise)}
        documents.append(stage_document(kind, row, response_text(task, cases, rng, noise, slip), rng))
    return documents


def pretraining_documents(world: World, noise: Noise | None = None, seed: int = 0, long_code: float = 1.0,
                          slip: float = 0.0) -> list[str]:  # fmt: skip
    """Every corpus task's documents, shuffled (seeded); see :func:`shown_as_code` for ``long_code`` and
    :func:`written_code` for ``slip``."""
    rng, noise = random.Random(seed), noise or Noise()
    documents = [doc for task, cases in world.corpus
                 for doc in task_documents(task, cases, rng, noise, long_code, slip)]  # fmt: skip
    rng.shuffle(documents)
    return documents
