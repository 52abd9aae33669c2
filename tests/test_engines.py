"""The hf engine on the tiny random model, and the stage runner's small pure pieces (shards, seeds, settings)."""

from __future__ import annotations

import pytest

from lightning_selfalign.engines import Request, Sampling, cut_at_stop, merge_system_turn
from lightning_selfalign.errors import UserError


@pytest.fixture(scope="module")
def hf(tiny_model_dir):
    from lightning_selfalign.engines import load_engine

    return load_engine("hf", str(tiny_model_dir))


def prompts(count: int) -> list[Request]:
    # Different lengths, so batches are padded differently.
    return [Request(text="def f(x):\n" + "    x += 1\n" * k, messages=None, seed=k) for k in range(count)]


@pytest.mark.timeout(300)
def test_each_row_is_independent_of_its_batch(hf):
    sampling = Sampling(temperature=0.8, top_p=0.9, max_new_tokens=10)
    requests = prompts(6)
    hf.default_batch_size = 6
    together = hf.generate(requests, sampling)
    hf.default_batch_size = 2
    shuffled = hf.generate(requests[::-1], sampling)[::-1]
    alone = [hf.generate([request], sampling)[0] for request in requests[:2]]
    assert together == shuffled and together[:2] == alone
    reseeded = hf.generate([Request(text=requests[0].text, messages=None, seed=1234)], sampling)[0]
    assert reseeded != together[0], "the seed decides the sample"
    assert all(c.finish_reason == "length" and c.num_tokens == 10 for c in together)


@pytest.mark.timeout(300)
def test_rows_that_end_early_leave_the_batch_without_changing_the_others(hf):
    sampling = Sampling(temperature=0.9, top_p=1.0, max_new_tokens=24)
    free = [c.text for c in hf.generate(prompts(6), sampling)]
    # The two characters found in most rows' free text: rows then stop at different steps, or not at all.
    stop = max({text[i : i + 2] for text in free for i in range(len(text) - 1)}, key=lambda s: (
        sum(s in text for text in free), s))  # fmt: skip
    requests = [Request(text=r.text, messages=None, stop=(stop,), seed=r.seed) for r in prompts(6)]
    hf.default_batch_size = 6
    together = hf.generate(requests, sampling)
    alone = [hf.generate([request], sampling)[0] for request in requests]
    assert together == alone
    assert len({c.num_tokens for c in together}) > 1, "rows ended at different steps"
    assert all(free[i].startswith(c.text) for i, c in enumerate(together))


def _fmix32(value: int) -> int:
    """MurmurHash3's finaliser in plain Python integers, the reference for the tensor version."""
    value ^= value >> 16
    value = (value * 0x85EBCA6B) & 0xFFFFFFFF
    value ^= value >> 13
    value = (value * 0xC2B2AE35) & 0xFFFFFFFF
    return value ^ (value >> 16)


def test_the_hashed_sampler_draws_each_token_as_often_as_its_probability():
    import torch

    from lightning_selfalign.engines.hf import PerRowSampler, mix32

    values = [0, 1, 0xDEADBEEF, 0xFFFFFFFF, 123456789]
    assert mix32(torch.tensor(values)).tolist() == [_fmix32(v) for v in values]
    rows = 20000
    logits = torch.log(torch.tensor([0.5, 0.3, 0.2, 0.0])).repeat(rows, 1)

    def shares(top_p: float, step: int, temperature: float = 1.0) -> list[float]:
        sampler = PerRowSampler(range(rows), Sampling(temperature=temperature, top_p=top_p), torch.device("cpu"))
        chosen = sampler.draw(logits.clone(), step, torch.arange(rows))
        return (torch.bincount(chosen, minlength=4).double() / rows).tolist()

    assert shares(1.0, 0) == pytest.approx([0.5, 0.3, 0.2, 0.0], abs=0.015)
    assert shares(0.7, 5) == pytest.approx([0.625, 0.375, 0.0, 0.0], abs=0.015)  # top-p keeps 0.5 + 0.3
    assert shares(1.0, 1, temperature=0.5) == pytest.approx([0.658, 0.237, 0.105, 0.0], abs=0.015)
    sampler = PerRowSampler([7], Sampling(temperature=1.0, top_p=1.0), torch.device("cpu"))
    flat = torch.zeros(1, 1000)
    steps = {int(sampler.draw(flat.clone(), step, torch.tensor([0]))) for step in range(50)}
    assert len(steps) > 40, "one row draws afresh at every step"


@pytest.mark.timeout(300)
def test_greedy_equals_transformers_greedy(hf):
    import torch

    request = prompts(3)[2]
    mine = hf.generate([request], Sampling(temperature=0, max_new_tokens=8))[0]
    ids = torch.tensor([hf.tokenizer(request.text)["input_ids"]])
    with torch.inference_mode():
        theirs = hf.lm.generate(ids, attention_mask=torch.ones_like(ids), do_sample=False, max_new_tokens=8,
                                pad_token_id=hf.pad_id)  # fmt: skip
    assert mine.text == hf.tokenizer.decode(theirs[0, ids.shape[1] :], skip_special_tokens=True)


@pytest.mark.timeout(300)
def test_stop_string_ends_a_row_and_is_cut(hf):
    sampling = Sampling(temperature=0.7, max_new_tokens=16)
    free = hf.generate(prompts(1), sampling)[0]
    stop = free.text[3:6]  # a string the model is about to write
    stopped = hf.generate([Request(text=prompts(1)[0].text, messages=None, stop=(stop,), seed=0)], sampling)[0]
    assert stopped.finish_reason == "stop"
    assert free.text.startswith(stopped.text) and stop not in stopped.text and len(stopped.text) < len(free.text)


@pytest.mark.timeout(300)
def test_chat_prompt_through_a_template_without_system_role(hf):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Write f."}]
    out = hf.generate([Request(text=None, messages=messages, seed=3)], Sampling(max_new_tokens=4))[0]
    assert out.num_tokens == 4
    from lightning_selfalign.engines import prompt_token_ids

    rendered = hf.tokenizer.decode(prompt_token_ids(hf.tokenizer, Request(text=None, messages=messages)))
    assert rendered.endswith("### Instruction\nBe brief.\n\nWrite f.\n\n### Response\n")


def test_cut_at_stop_and_merge_system_turn():
    assert cut_at_stop("abc[end]def\n### Example", ["\n### Example", "[end]"]) == ("abc", True)
    assert cut_at_stop("abc", ["[end]"]) == ("abc", False)
    merged = merge_system_turn([{"role": "system", "content": "S"}, {"role": "user", "content": "U"}])
    assert merged == [{"role": "user", "content": "S\n\nU"}]


def test_unloadable_model_is_a_user_error(tmp_path):
    from lightning_selfalign.engines import load_engine

    with pytest.raises(UserError, match="--model .*cannot load it"):
        load_engine("hf", str(tmp_path / "missing"))
    with pytest.raises(UserError, match="--engine must be one of"):
        load_engine("tpu", "x")


def test_shards_partition_the_rows(monkeypatch):
    from lightning_selfalign.stages import in_shard, parse_shard, shard_output

    ids = [f"row{i}" for i in range(400)]
    parts = [[i for i in ids if in_shard(i, (k, 4))] for k in range(4)]
    assert sorted(sum(parts, [])) == sorted(ids) and all(60 < len(part) < 140 for part in parts)
    assert parse_shard("2/4") == (2, 4)
    for bad in ("4/4", "x/2", "1"):
        with pytest.raises(UserError, match="--shard must be i/n"):
            parse_shard(bad)
    for name in ("RANK", "WORLD_SIZE", "SLURM_PROCID", "SLURM_NTASKS", "LOCAL_RANK", "LOCAL_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert parse_shard(None) == (0, 1)
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "8")
    assert parse_shard(None) == (3, 8)
    assert shard_output("out/r.jsonl", (3, 8)).name == "r.shard-00003-of-00008.jsonl"
    assert shard_output("out/r.jsonl", (0, 1)).name == "r.jsonl"


def test_sample_ids_and_seeds_are_stable_and_distinct():
    from lightning_selfalign.stages import StageSettings, make_samples

    settings = StageSettings.for_stage("instructions", n=4)
    row = {"id": "c1", "seed": "def f(x): return x", "concepts": ["recursion", "lists"]}
    first = make_samples("instructions", row, range(4), settings)
    again = make_samples("instructions", row, [2], settings)
    assert again[0] == first[2], "a sample is rebuilt identically on its own (resume)"
    assert len({s.id for s in first}) == 4 and len({s.request.seed for s in first}) == 4
    assert all(s.sampled["category"] and s.sampled["difficulty"] for s in first)
    other_seed = make_samples("instructions", row, [2], StageSettings.for_stage("instructions", seed=1))
    assert other_seed[0].id == first[2].id and other_seed[0].request.seed != first[2].request.seed


def test_bad_flags_are_collected_into_one_error(tmp_path):
    from lightning_selfalign.stages import generate_command

    with pytest.raises(UserError) as error:
        generate_command(stage="responses", input="x.jsonl", output=str(tmp_path / "o.jsonl"), n=0, top_p=2.0)
    message = str(error.value)
    assert "--n must be at least 1" in message and "--top_p" in message and "--model is required" in message


def test_duplicate_input_ids_are_refused(tmp_path):
    from lightning_selfalign.stages import StageSettings, run_stage

    rows = [{"id": "a", "instruction": "x"}, {"id": "a", "instruction": "y"}]
    with pytest.raises(UserError, match="id 'a' appears 2 times"):
        run_stage("responses", rows, tmp_path / "o.jsonl", engine=None, settings=StageSettings(), source="in.jsonl")
