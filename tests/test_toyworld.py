"""The code world: disjoint splits, reference tests that hold, documents in the pipeline's own formats, and a
pretraining run that makes a model the loop's engines load and prompt."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from lightning_selfalign.evaluation.tasks import load_tasks
from lightning_selfalign.prompts import STAGES, build_prompt, parse_output, prompt_fingerprint
from lightning_selfalign.prompts.formats import V1_END
from lightning_selfalign.toyworld import build_world, pretraining_documents, split_of, write_world
from lightning_selfalign.toyworld.documents import PROMPT_FORMAT, Noise, shown_as_code, task_documents
from lightning_selfalign.toyworld.world import HELD_OUT_LENGTH

ROOT = Path(__file__).resolve().parents[1]
BASE_MODEL = ROOT / "models" / "toyworld-base"


@pytest.fixture(scope="module")
def world():
    return build_world(seed=0)


def test_splits_are_disjoint_and_sized(world) -> None:
    corpus = {task.composition for task, _ in world.corpus}
    seed_pool = {task.composition for task, _ in world.seed_pool}
    benchmark = {task.composition for task, _ in world.benchmark}
    assert len(world.benchmark) >= 200 and len(world.seed_pool) >= 1000 and len(world.corpus) >= 5000
    assert not benchmark & seed_pool and not benchmark & corpus, "no benchmark composition is seen anywhere"
    assert not {t.key for t, _ in world.corpus} & {t.key for t, _ in world.seed_pool}, "no task in two splits"
    assert len(benchmark) == len(world.benchmark), "benchmark compositions are distinct"
    assert all(len(c) == HELD_OUT_LENGTH for c in benchmark | seed_pool)
    long = sum(len(task.steps) == HELD_OUT_LENGTH for task, _ in world.corpus)
    assert 0.03 < long / len(world.corpus) < 0.15, "the base sees a few long chains, too few to master them"
    # The split of a task is a property of the task, whatever the seed that drew it.
    other = build_world(seed=1, corpus=200, seed_pool=200, benchmark=50)
    for split, tasks in (("corpus", other.corpus), ("seed_pool", other.seed_pool), ("benchmark", other.benchmark)):
        assert {split_of(task) for task, _ in tasks} == {split}
    # No benchmark function text appears anywhere the loop or the base model could have read it.
    seen_code = {task.code() for task, _ in world.corpus + world.seed_pool}
    assert not any(task.code() in seen_code for task, _ in world.benchmark)


def test_world_is_deterministic(world) -> None:
    again = build_world(seed=0)
    assert [task.code() for task, _ in again.benchmark] == [task.code() for task, _ in world.benchmark]
    assert [task.key for task, _ in again.seed_pool] == [task.key for task, _ in world.seed_pool]


def test_written_benchmark_passes_with_reference_and_fails_without(tmp_path: Path, world) -> None:
    from lightning_selfalign.sandbox import execute

    write_world(tmp_path, world)
    tasks = load_tasks(benchmark_file=str(tmp_path / "benchmark.jsonl"))
    assert len(tasks) == len(world.benchmark)
    by_id = {f"ToyWorld/{i}": task for i, (task, _) in enumerate(world.benchmark)}
    for task in tasks[:25]:
        reference = by_id[task.task_id].code()
        assert execute(reference, task.tests()).verdict == "pass", task.task_id
        assert execute(task.prompt + "    return None\n", task.tests()).verdict == "fail", task.task_id
    seed_files = sorted((tmp_path / "seed-pool").glob("*.py"))
    assert seed_files and sum(p.read_text().count("\ndef ") for p in seed_files) == len(world.seed_pool)


def test_documents_are_the_stage_prompts_with_their_answers(world) -> None:
    rng = random.Random(0)
    parsed = {stage: 0 for stage in STAGES}
    for task, cases in world.corpus[:300]:
        plain, staged = task_documents(task, cases, rng, Noise(wrong_code=0.0, wrong_tests=0.0))
        assert plain == task.code()
        stage = next(
            s
            for s in STAGES
            if staged.startswith(
                build_prompt(s, _row(s), rng=rng, num_fewshot=0, prompt_format=PROMPT_FORMAT).text[:60]
            )
        )
        assert staged.endswith(V1_END)
        answer = staged.rsplit("\n" + {"concepts": "[concepts]", "instructions": "[instruction]",
                                       "responses": "[response]"}[stage] + "\n", 1)[1]  # fmt: skip
        result = parse_output(stage, answer, PROMPT_FORMAT)
        assert result.fields is not None, (stage, answer)
        parsed[stage] += 1
        if stage == "responses":
            from lightning_selfalign.sandbox import execute

            if parsed[stage] <= 10:  # clean documents: their code passes their own tests
                assert execute(result.fields["code"], result.fields["tests"]).verdict == "pass"
    assert all(parsed.values())


def _row(stage: str) -> dict:
    return {"id": "x", "seed": "def f(x):\n    return x", "concepts": ["a"], "category": "function",
            "difficulty": "easy", "instruction": "x"}  # fmt: skip


def test_noise_makes_some_responses_fail() -> None:
    small = build_world(seed=0, corpus=400, seed_pool=1, benchmark=1)
    documents = pretraining_documents(small, Noise(wrong_code=0.5, wrong_tests=0.0, literal_assert=0.0))
    from lightning_selfalign.sandbox import execute

    verdicts = []
    for document in documents:
        if "[response]\n" in document:
            fields = parse_output("responses", document.rsplit("[response]\n", 1)[1], PROMPT_FORMAT).fields
            verdicts.append(execute(fields["code"], fields["tests"]).verdict)
        if len(verdicts) == 30:
            break
    assert "pass" in verdicts and "fail" in verdicts


def test_long_code_leaves_a_share_of_four_step_tasks_as_instructions_only() -> None:
    small = build_world(seed=0, corpus=400, seed_pool=1, benchmark=1)
    long_tasks = [task for task, _ in small.corpus if len(task.steps) == 4]
    assert len(long_tasks) >= 20
    assert pretraining_documents(small) == pretraining_documents(small, long_code=1.0)
    for share in (0.0, 0.5):
        documents = pretraining_documents(small, long_code=share)
        as_code = {task.key for task in long_tasks if shown_as_code(task, share)}
        assert len(documents) == 2 * len(small.corpus) - len(long_tasks) + len(as_code)
        assert (share == 0.0) == (not as_code) and len(as_code) < len(long_tasks)
        for task in long_tasks:
            written = any(task.code() in document for document in documents)
            assert written == (task.key in as_code)
            if not written:
                mentions = [document for document in documents if task.description() in document]
                assert len(mentions) == 1 and "[instruction]" in mentions[0]
    assert as_code >= {task.key for task in long_tasks if shown_as_code(task, 0.25)}


def test_slip_writes_some_code_one_constant_off_under_the_right_docstring_and_right_tests() -> None:
    from lightning_selfalign.sandbox import execute
    from lightning_selfalign.toyworld.documents import SLIP_OPS, slips, written_code

    small = build_world(seed=0, corpus=400, seed_pool=1, benchmark=1)
    assert pretraining_documents(small) == pretraining_documents(small, slip=0.0)
    slipping = [task for task, _ in small.corpus
                if slips(task, 0.5) and {step.op.name for step in task.steps} & set(SLIP_OPS)]  # fmt: skip
    assert len(slipping) >= 20 and not any(slips(task, 0.0) for task, _ in small.corpus)
    for task in slipping[:5]:
        code = written_code(task, 0.5)
        assert code != task.code() and code.startswith(task.prompt())
        namespace: dict = {}
        exec(compile(code, "<slipped>", "exec"), namespace)
        assert any(namespace[task.name](argument) != expected for argument, expected in _cases(small, task))
    # In response documents only the code slips: the tests recompute the description's chain, so they catch it.
    clean = Noise(wrong_code=0.0, wrong_tests=0.0, literal_assert=0.0)
    references = {task.code() for task, _ in small.corpus}
    verdicts: dict[bool, list[str]] = {True: [], False: []}
    for document in pretraining_documents(small, clean, slip=1.0):
        if "[response]\n" in document:
            fields = parse_output("responses", document.rsplit("[response]\n", 1)[1], PROMPT_FORMAT).fields
            code = fields["code"]
            verdicts[code not in references].append(execute(code, fields["tests"]).verdict)
    assert verdicts[False] and set(verdicts[False]) == {"pass"}
    assert len(verdicts[True]) >= 10 and verdicts[True].count("fail") >= 0.8 * len(verdicts[True])


def _cases(world, task) -> list:
    return next(cases for t, cases in world.corpus if t.key == task.key)


@pytest.mark.parametrize(
    ("option", "value"),
    [("pretrain_long_code", 1.5), ("pretrain_slip", -0.1), ("pretrain_stop_at", 0), ("pretrain_stop_at", 801)],
)
def test_pretraining_options_out_of_range_are_a_clear_error(tmp_path: Path, option: str, value: float) -> None:
    from lightning_selfalign.errors import UserError
    from lightning_selfalign.tiny import build_tiny_model

    with pytest.raises(UserError, match=option):
        build_tiny_model(str(tmp_path / "m"), pretrain="toyworld", **{option: value})
    assert not (tmp_path / "m").exists()


@pytest.mark.slow
def test_short_pretraining_makes_a_model_the_engines_load(tmp_path: Path) -> None:
    from lightning_selfalign.engines import EngineOptions, Sampling, load_engine
    from lightning_selfalign.tiny import build_tiny_model

    output = build_tiny_model(str(tmp_path / "m"), pretrain="toyworld", hidden_size=32, num_layers=1,
                              intermediate_size=64, pretrain_steps=4, pretrain_stop_at=3, pretrain_batch=2,
                              pretrain_long_code=0.5)  # fmt: skip
    facts = json.loads((output / "pretraining.json").read_text())
    assert facts["steps"] == 4 and facts["stopped_at"] == 3 and facts["batch"] == 2
    assert facts["recipe"] == {"long_code": 0.5, "slip": 0.0} and facts["loss_curve"][-1][0] == 2
    assert facts["prompt_fingerprints"] == _current_fingerprints()
    engine = load_engine("hf", str(output), EngineOptions(batch_size=2))
    try:
        prompt = build_prompt(
            "responses",
            {"id": "r", "instruction": "Write f."},
            rng=random.Random(0),
            num_fewshot=0,
            prompt_format=PROMPT_FORMAT,
        )
        (completion,) = engine.generate([prompt_request(prompt)], Sampling(0.0, 1.0, 8))
    finally:
        engine.close()
    assert completion.num_tokens >= 1
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(output)
    document = pretraining_documents(build_world(seed=0, corpus=20, seed_pool=1, benchmark=1))[0]
    assert tokenizer.decode(tokenizer(document, add_special_tokens=False)["input_ids"]) == document


def prompt_request(prompt):
    from lightning_selfalign.engines import Request

    return Request.from_prompt(prompt, seed=0)


def _current_fingerprints() -> dict:
    return {
        stage: prompt_fingerprint(stage, chat=False, num_fewshot=0, prompt_format=PROMPT_FORMAT) for stage in STAGES
    }


def test_committed_base_model_matches_the_prompts_it_will_be_shown() -> None:
    facts = json.loads((BASE_MODEL / "pretraining.json").read_text())
    assert facts["prompt_fingerprints"] == _current_fingerprints(), (
        "the stage prompts changed since models/toyworld-base was pretrained: rebuild it with "
        "scripts/build_toyworld_model.sh"
    )
    assert (BASE_MODEL / "model.safetensors").stat().st_size < 20 * 2**20


def test_oracle_reads_every_description_back_and_judges_code_in_the_sandbox(world) -> None:
    from lightning_selfalign.sandbox import SandboxPool
    from lightning_selfalign.toyworld.oracle import judge_rows, parse_description, stated_description

    for task, _ in world.benchmark + world.seed_pool[:200] + world.corpus[:200]:
        parsed = parse_description(stated_description(task.prompt()))
        assert parsed is not None and parsed.key == task.key, task.name
    assert parse_description("Given an integer, add step, then negate it.") is None  # a model's word for a number
    task = world.seed_pool[0][0]
    instruction = f"Write a Python function `{task.signature()}`. {task.description()}"
    wrong = task.code().replace("return ", "return 1 + len(str(") + "))"
    rows = [
        {"id": "right", "instruction": instruction, "code": task.code()},
        {"id": "wrong", "instruction": instruction, "code": wrong},
        {"id": "other", "instruction": "Write a parser for CSV files.", "code": task.code()},
    ]
    with SandboxPool(workers=1) as pool:
        verdicts = {row["id"]: verdict for row, verdict in judge_rows(rows, pool)}
    assert verdicts == {"right": "right", "wrong": "wrong", "other": "unparsable"}
