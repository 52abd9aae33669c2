"""InstructionDataModule on real files with the tiny tokenizer: formats, masks, bad input, over-length policy,
determinism, accumulation windows, rank shards, reloading new files, and the resumable loader state."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from lightning_selfalign.data import InstructionDataModule
from lightning_selfalign.errors import UserError

DEMO = Path(__file__).resolve().parents[1] / "lightning_selfalign" / "demo" / "stdlib_sft.jsonl"


def _write(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def _pairs(n: int, offset: int = 0) -> list[dict]:
    return [
        {"instruction": f"Write function number {i} " + "please " * (i % 7),
         "response": f"def f{i}(x):\n    return x + {i}\n" * (1 + i % 5)}
        for i in range(offset, offset + n)
    ]  # fmt: skip


@pytest.fixture()
def make_dm(tiny_model_dir, tmp_path):
    def make(train_files, **kwargs) -> InstructionDataModule:
        kwargs.setdefault("tokenizer", str(tiny_model_dir))
        kwargs.setdefault("cache_dir", str(tmp_path / "cache"))
        return InstructionDataModule(train_files, **kwargs)

    return make


def _attach(dm: InstructionDataModule, rank: int = 0, world: int = 1, accumulate: int = 1, epoch: int = 0) -> None:
    dm.trainer = SimpleNamespace(global_rank=rank, world_size=world, accumulate_grad_batches=accumulate,
                                 current_epoch=epoch)  # fmt: skip


def _fingerprints(loader) -> list[tuple]:
    return [tuple(batch["input_ids"].flatten().tolist()) for batch in loader]


def test_three_row_formats_give_the_same_tokens_and_labels_cover_response_and_eos(make_dm, tmp_path):
    instruction, response = "Add two numbers.", "def add(a, b):\n    return a + b"
    rows = [
        {"instruction": instruction, "response": response},
        {"messages": [{"role": "user", "content": instruction}, {"role": "assistant", "content": response}]},
        {"prompt": instruction, "completion": response},
    ]
    dm = make_dm(str(_write(tmp_path / "mixed.jsonl", rows)), packing=False, batch_size=3, shuffle=False)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"][0].tolist() == batch["input_ids"][1].tolist() == batch["input_ids"][2].tolist()
    tokenizer = dm.tokenizer
    labels = batch["labels"][0]
    labelled = labels[labels != -100].tolist()
    assert tokenizer.decode(labelled) == response + tokenizer.eos_token
    assert labels[0] == -100 and int(batch["input_ids"][0, -1]) == tokenizer.eos_token_id
    # Labels are one contiguous run that ends the example: response tokens, then EOS.
    positions = (labels != -100).nonzero().flatten().tolist()
    assert positions == list(range(positions[0], len(labels)))
    text = tokenizer.decode(batch["input_ids"][0].tolist())
    assert text.endswith(f"### Instruction\n{instruction}\n\n### Response\n{response}{tokenizer.eos_token}")


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (b'{"instruction": "a", "response": "b"}\n{"instruction": "a", "response": \n', ":2: invalid JSON"),
        (b'{"instruction": "a", "response": "b"}\n{"instruction": "a"}\n', ":2: missing field(s) 'response'"),
        (b'{"instruction": "a", "response": "b"}\n\n{"text": "a"}\n', ":3: missing field(s)"),
        (b"", "file is empty"),
        (b'{"instruction": "a", "response": "\xff\xfe"}\n', ":1: invalid UTF-8"),
        (b'{"instruction": 3, "response": "b"}\n', ":1: field 'instruction' must be a string"),
        (b'{"messages": [{"role": "system", "content": "s"}]}\n', ":1: messages[0].role is 'system'"),
        (b'{"messages": [{"role": "user", "content": "s"}]}\n', ":1: field 'messages' has no assistant turn"),
    ],
)
def test_bad_input_is_one_line_error_naming_file_and_line(make_dm, tmp_path, content, expected):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    dm = make_dm(str(path))
    with pytest.raises(UserError) as caught:
        dm.setup("fit")
    message = str(caught.value)
    assert str(path) in message and expected in message and "\n" not in message


def test_bad_settings_and_missing_files_are_user_errors(make_dm, tmp_path):
    with pytest.raises(UserError, match="val_fraction"):
        make_dm("x.jsonl", val_fraction=1.5)
    with pytest.raises(UserError, match="no such file"):
        make_dm(str(tmp_path / "nothing-*.jsonl")).setup("fit")
    path = _write(tmp_path / "ok.jsonl", _pairs(2))
    with pytest.raises(UserError, match="--data.tokenizer"):
        InstructionDataModule(str(path), cache_dir=str(tmp_path / "c")).setup("fit")


def test_over_long_examples_truncate_keeping_eos_or_drop(make_dm, tmp_path):
    long_response = "def long():\n" + "    x = compute_something_long(1, 2, 3)\n" * 80
    rows = [{"instruction": "short", "response": "ok"}, {"instruction": "write it", "response": long_response},
            {"instruction": "word " * 400, "response": "ok"}]  # fmt: skip
    path = str(_write(tmp_path / "long.jsonl", rows))
    truncating = make_dm(path, max_length=128, packing=False, shuffle=False, batch_size=1)
    truncating.setup("fit")
    assert truncating.stats["train_truncated"] == 1 and truncating.stats["train_prompt_too_long"] == 1
    assert truncating.stats["train_examples"] == 2
    batches = list(truncating.train_dataloader())
    cut = max(batches, key=lambda b: b["input_ids"].shape[1])
    eos = truncating.tokenizer.eos_token_id
    assert cut["input_ids"].shape[1] == 128 and int(cut["input_ids"][0, -1]) == eos and int(cut["labels"][0, -1]) == eos
    dropping = make_dm(path, max_length=128, overflow="drop")
    dropping.setup("fit")
    assert dropping.stats["train_too_long"] == 2 and dropping.stats["train_examples"] == 1


def test_deterministic_given_seed_and_reshuffled_per_epoch(make_dm, tmp_path):
    path = str(_write(tmp_path / "d.jsonl", _pairs(60)))
    first, second = make_dm(path, batch_size=2, max_length=256), make_dm(path, batch_size=2, max_length=256)
    for dm in (first, second):
        dm.setup("fit")
    assert _fingerprints(first.train_dataloader()) == _fingerprints(second.train_dataloader())
    loader = first.train_dataloader()
    loader.sampler.set_epoch(1)
    epoch1 = _fingerprints(loader)
    assert epoch1 != _fingerprints(second.train_dataloader()) and sorted(epoch1) != []
    other = make_dm(path, batch_size=2, max_length=256, seed=7)
    other.setup("fit")
    assert _fingerprints(other.train_dataloader()) != _fingerprints(second.train_dataloader())


@pytest.mark.parametrize("packing", [True, False])
def test_window_tokens_sum_label_tokens_over_each_accumulation_window(make_dm, tmp_path, packing):
    dm = make_dm(str(_write(tmp_path / "w.jsonl", _pairs(50))), batch_size=2, max_length=200, packing=packing)
    _attach(dm, accumulate=3)
    dm.setup("fit")
    batches = list(dm.train_dataloader())
    label_tokens = [int((b["labels"] != -100).sum()) for b in batches]
    for start in range(0, len(batches), 3):
        window = batches[start : start + 3]
        assert all(float(b["window_tokens"]) == sum(label_tokens[start : start + 3]) for b in window)
    assert sum(int(b["num_examples"]) for b in batches) == 50


def test_ranks_get_equal_shards_covering_every_example(make_dm, tmp_path):
    path = str(_write(tmp_path / "r.jsonl", _pairs(23)))
    seen, counts = [], []
    for rank in range(2):
        dm = make_dm(path, batch_size=2, packing=False)
        _attach(dm, rank=rank, world=2)
        dm.setup("fit")
        batches = _fingerprints(dm.train_dataloader())
        counts.append(len(batches))
        seen.extend(batches)
    assert counts[0] == counts[1] == 6  # 12 global batches of 2 (the last holds 1), 6 per rank
    assert len(set(seen)) == 12


def test_set_train_files_picks_up_new_data(make_dm, tmp_path):
    first = _write(tmp_path / "round0.jsonl", _pairs(10))
    dm = make_dm(str(first), batch_size=4, packing=False)
    dm.setup("fit")
    assert dm.stats["train_examples"] == 10
    second = _write(tmp_path / "round1.jsonl", _pairs(30, offset=100))
    dm.set_train_files([str(first), str(second)])
    loader = dm.train_dataloader()
    assert dm.stats["train_examples"] == 40 and sum(int(b["num_examples"]) for b in loader) == 40
    _write(first, _pairs(5, offset=500))  # rewritten in place: a glob or path re-read notices it
    dm.train_dataloader()
    assert dm.stats["train_examples"] == 35


def test_validation_split_by_fraction_or_files(make_dm, tmp_path):
    path = str(_write(tmp_path / "t.jsonl", _pairs(40)))
    dm = make_dm(path, val_fraction=0.25, packing=False, batch_size=4)
    dm.setup("fit")
    train = {tuple(row) for b in dm.train_dataloader() for row in b["input_ids"].tolist()}
    val = {tuple(row) for b in dm.val_dataloader() for row in b["input_ids"].tolist()}
    assert dm.stats["val_examples"] == 10 and dm.stats["train_examples"] == 30 and not train & val
    held_out = make_dm(path, val_files=str(_write(tmp_path / "v.jsonl", _pairs(6, offset=900))))
    held_out.setup("fit")
    assert held_out.stats["val_examples"] == 6 and held_out.stats["train_examples"] == 40
    assert make_dm(path).val_dataloader() == []


@pytest.mark.timeout(120)
@pytest.mark.parametrize(("epoch", "num_workers"), [(0, 0), (2, 0), (1, 2)])
def test_loader_state_round_trip_resumes_at_the_next_batch(make_dm, tmp_path, epoch, num_workers):
    path = str(_write(tmp_path / "s.jsonl", _pairs(40)))
    dm = make_dm(path, batch_size=2, max_length=200, num_workers=num_workers)
    _attach(dm, accumulate=2, epoch=epoch)
    dm.setup("fit")
    loader = dm.train_dataloader()
    full = [(b["input_ids"].tolist(), float(b["window_tokens"])) for b in loader]
    iterator = iter(loader)
    for _ in range(3):
        next(iterator)
    state = loader.state_dict()
    assert state["batches_done"] == 3 and state["epoch"] == epoch

    resumed_dm = make_dm(path, batch_size=2, max_length=200, num_workers=num_workers)
    _attach(resumed_dm, accumulate=2)  # a fresh process: the epoch comes from the checkpoint
    resumed_dm.setup("fit")
    resumed = resumed_dm.train_dataloader()
    resumed.load_state_dict(state)
    iter(resumed)  # an iterator made and dropped (as Lightning may do) does not use up the resume position
    rest = [(b["input_ids"].tolist(), float(b["window_tokens"])) for b in resumed]
    assert rest == full[3:]
    assert len(resumed) == len(full)  # Lightning counts the epoch's batches from the full length


def test_loader_state_from_other_data_is_refused(make_dm, tmp_path):
    dm = make_dm(str(_write(tmp_path / "a.jsonl", _pairs(20))), batch_size=2)
    dm.setup("fit")
    state = dm.train_dataloader().state_dict()
    other = make_dm(str(_write(tmp_path / "b.jsonl", _pairs(21))), batch_size=2)
    other.setup("fit")
    with pytest.raises(UserError, match="does not fit the current data"):
        other.train_dataloader().load_state_dict(state)


def test_demo_data_packs_to_at_least_95_percent_real_tokens(make_dm):
    packed = make_dm(str(DEMO), batch_size=8)
    packed.setup("fit")
    unpacked = make_dm(str(DEMO), batch_size=8, packing=False)
    unpacked.setup("fit")
    assert packed.stats["train_read"] >= 600
    assert packed.stats["real_token_fraction"] >= 0.95
    assert unpacked.stats["real_token_fraction"] < 0.7
    grouped = make_dm(str(DEMO), batch_size=8, packing=False, group_by_length=True)
    grouped.setup("fit")
    assert grouped.stats["real_token_fraction"] > unpacked.stats["real_token_fraction"]
    computed = real = 0
    for batch in packed.train_dataloader():
        computed += batch["input_ids"].numel()
        real += int(batch["num_real_tokens"])
    assert real / computed == pytest.approx(packed.stats["real_token_fraction"], abs=1e-3)
    assert real == packed.stats["train_tokens"]
