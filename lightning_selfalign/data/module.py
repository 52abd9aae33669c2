"""``InstructionDataModule``: JSONL instruction data -> chat template -> masked, packed, resumable batches.

The path of the data, top to bottom:

1. :func:`~lightning_selfalign.data.rows.write_conversations`: strict validation (file:line errors) and a
   streamed Arrow file of conversations, cached by the files' paths, sizes and modification times;
2. :class:`~lightning_selfalign.data.tokenize.ChatTokenizer` through ``datasets.map`` (multiprocess,
   cached, memory-mapped): one chat-template pass per example, loss mask, over-length policy;
3. :func:`~lightning_selfalign.data.packing.make_rows` / :func:`~lightning_selfalign.data.packing.plan_epoch`:
   rows, batches, rank shards and accumulation windows as numpy arrays;
4. :class:`~lightning_selfalign.data.loading.ResumableDataLoader`: tensors, with a checkpointable position.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
from lightning.pytorch.utilities import rank_zero_info

from lightning_selfalign.data import packing
from lightning_selfalign.data.loading import PlannedBatches, PlannedBatchSampler, ResumableDataLoader
from lightning_selfalign.data.rows import source_key, write_conversations
from lightning_selfalign.data.tokenize import (
    KEPT,
    STATUS_NAMES,
    TRUNCATED,
    ChatTokenizer,
    Overflow,
    load_tokenizer,
    pad_id_of,
    tokenizer_fingerprint,
)
from lightning_selfalign.errors import UserError
from lightning_selfalign.jsonl import fingerprint

CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$HF_DATASETS_CACHE/lightning_selfalign``, else ``~/.cache/huggingface/datasets/lightning_selfalign``."""
    base = os.environ.get("HF_DATASETS_CACHE") or Path.home() / ".cache" / "huggingface" / "datasets"
    return Path(base) / "lightning_selfalign"


class TokenizedFiles:
    """The tokenised examples of a set of JSONL files (memory-mapped) and their per-example arrays."""

    def __init__(self, examples: Any, files: list[Path], key: str) -> None:
        self.examples = examples
        self.files = files
        self.key = key
        table = examples.data
        self.lengths = table.column("length").to_numpy().astype(np.int64)
        self.num_labels = table.column("num_labels").to_numpy().astype(np.int64)
        self.status = table.column("status").to_numpy()

    def usable(self) -> np.ndarray:
        """Ids of examples kept whole or truncated (not dropped)."""
        return np.flatnonzero((self.status == KEPT) | (self.status == TRUNCATED))

    def counts(self) -> dict[str, int]:
        """Examples read, kept, truncated and dropped by reason."""
        found = np.bincount(self.status, minlength=len(STATUS_NAMES))
        counts = {"read": len(self.status), "files": len(self.files)}
        counts.update({STATUS_NAMES[code]: int(found[code]) for code in STATUS_NAMES if code != KEPT})
        counts["usable"] = len(self.usable())
        return counts


class InstructionDataModule(pl.LightningDataModule):
    """Instruction-tuning data from JSONL files, rendered with the model's chat template.

    Rows need ``instruction`` + ``response``, or ``messages`` (user/assistant turns), or ``prompt`` +
    ``completion``. Loss is on response tokens and their EOS only. Batches follow the contract described in
    :mod:`lightning_selfalign.data.loading`; the train loader is sharded by rank here (Lightning leaves it
    alone) and its position is saved in checkpoints for an exact mid-epoch resume.
    """

    def __init__(
        self,
        train_files: str | list[str],
        val_files: str | list[str] | None = None,
        val_fraction: float = 0.0,
        tokenizer: str | None = None,
        max_length: int = 1280,
        overflow: Overflow = "truncate",
        packing: bool = True,
        group_by_length: bool = False,
        batch_size: int = 1,
        num_workers: int = 0,
        seed: int = 42,
        num_proc: int = 1,
        shuffle: bool = True,
        cache_dir: str | None = None,
    ) -> None:
        """
        Args:
            train_files: JSONL training files: paths or glob patterns (one, or a list).
            val_files: JSONL validation files (paths or globs); excludes ``val_fraction``.
            val_fraction: Fraction of the training examples held out for validation (seeded split).
            tokenizer: Tokenizer name or folder (normally the model's ``model_name_or_path``).
            max_length: Most tokens per example (and per packed row).
            overflow: Longer examples: ``truncate`` (keep the start, end with EOS) or ``drop``; both counted.
            packing: Pack whole examples into rows of ``max_length`` tokens with no padding between them
                (position ids restart per example; attention never crosses examples).
            group_by_length: Unpacked mode: batch examples of similar length together to cut padding.
            batch_size: Rows per micro-batch (packed rows when ``packing``, else examples).
            num_workers: DataLoader worker processes.
            seed: Seed for packing, shuffling and the validation split.
            num_proc: Processes for tokenisation (``datasets.map``).
            shuffle: Shuffle the training rows every epoch.
            cache_dir: Where validated and tokenised data is cached (default: the ``datasets`` cache).
        """
        super().__init__()
        self.save_hyperparameters()
        problems = []
        if not 0.0 <= val_fraction < 1.0:
            problems.append(f"--data.val_fraction must be in [0, 1), got {val_fraction}")
        if val_fraction and val_files:
            problems.append("give --data.val_files or --data.val_fraction, not both")
        if max_length < 8:
            problems.append(f"--data.max_length must be at least 8, got {max_length}")
        if overflow not in ("truncate", "drop"):
            problems.append(f"--data.overflow must be 'truncate' or 'drop', got {overflow!r}")
        if batch_size < 1 or num_workers < 0 or num_proc < 1:
            problems.append("--data.batch_size and --data.num_proc must be >= 1 and --data.num_workers >= 0")
        if problems:
            raise UserError("; ".join(problems))
        self.train_files = train_files
        self.cache_dir = Path(cache_dir) if cache_dir else default_cache_dir()
        self.stats: dict[str, Any] = {}
        self._tokenizer: Any = None
        self._train: TokenizedFiles | None = None
        self._val: TokenizedFiles | None = None
        self._train_ids = self._val_ids = np.zeros(0, dtype=np.int64)
        self._train_rows: packing.Rows | None = None
        self._val_rows: packing.Rows | None = None
        self._loaded_source: str | None = None
        self._train_loader: ResumableDataLoader | None = None
        self._pending_loader_state: dict[str, Any] | None = None

    # -- public API ------------------------------------------------------------------------------------

    def set_train_files(self, files: str | list[str]) -> None:
        """Train on ``files`` from the next ``train_dataloader()`` on (the round callback calls this)."""
        self.train_files = files
        self.hparams.train_files = files

    def prepare_data(self) -> None:
        """Validate and tokenise into the cache (Lightning runs this on one process per node)."""
        self._tokenized(self.train_files)
        if self.hparams.val_files:
            self._tokenized(self.hparams.val_files)

    def setup(self, stage: str | None = None) -> None:
        """Load the cached examples, split off validation, make the rows, and report the counts once."""
        self._load_if_changed()

    def train_dataloader(self) -> ResumableDataLoader:
        self._load_if_changed()
        assert self._train_rows is not None, "setup() loads the training rows"
        loader = self._loader(self._train_rows, self._train, shuffle=self.hparams.shuffle, training=True)
        if self._pending_loader_state is not None:
            loader.load_state_dict(self._pending_loader_state)
            self._pending_loader_state = None
        self._train_loader = loader
        return loader

    def train_batches(self) -> int:
        """Micro-batches per epoch on this rank, without building a loader (which would take a resumed position)."""
        self._load_if_changed()
        assert self._train_rows is not None, "setup() loads the training rows"
        rank, world, _, _ = self._trainer_layout()
        return self._batches_per_epoch(self._train_rows, rank, world)

    def _batches_per_epoch(self, rows: packing.Rows, rank: int, world: int) -> int:
        return len(packing.shard_batches(-(-len(rows) // self.hparams.batch_size), rank, world))

    def state_dict(self) -> dict[str, Any]:
        """The train loader's position, saved in every checkpoint by Lightning."""
        return {"train_loader": self._train_loader.state_dict()} if self._train_loader is not None else {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores the datamodule before it builds the train loader for fitting, but a module whose
        # configure_optimizers reads trainer.estimated_stepping_batches makes Lightning build that loader
        # early, and the fit loop then never hands it its saved position; so the position also travels here.
        state = state_dict.get("train_loader")
        if state is None:
            return
        if self._train_loader is not None:
            self._train_loader.load_state_dict(state)
        else:
            self._pending_loader_state = state

    def val_dataloader(self) -> ResumableDataLoader | list:
        self._load_if_changed()
        if self._val_rows is None or not len(self._val_rows):
            return []
        return self._loader(self._val_rows, self._val or self._train, shuffle=False, training=False)

    @property
    def tokenizer(self) -> Any:
        if self._tokenizer is None:
            if not self.hparams.tokenizer:
                raise UserError("--data.tokenizer is not set: give a tokenizer name or folder (the model's)")
            self._tokenizer = load_tokenizer(self.hparams.tokenizer)
        return self._tokenizer

    # -- loading ---------------------------------------------------------------------------------------

    def _tokenized(self, patterns: str | list[str]) -> TokenizedFiles:
        """Validated, tokenised examples of ``patterns``, from the cache when the files have not changed."""
        import datasets

        files, source = source_key(patterns)
        hp = self.hparams
        settings = [CACHE_VERSION, source, tokenizer_fingerprint(self.tokenizer), hp.max_length, hp.overflow]
        key = fingerprint(settings)
        tokens_path = self.cache_dir / f"tokens-{key}.arrow"
        conversations_path = self.cache_dir / f"conversations-{source}.arrow"
        if not conversations_path.exists() and not tokens_path.exists():
            write_conversations(files, conversations_path)
        if tokens_path.exists():
            return TokenizedFiles(datasets.Dataset.from_file(str(tokens_path)), files, key)
        conversations = datasets.Dataset.from_file(str(conversations_path))
        tokenized = conversations.map(
            ChatTokenizer(self.tokenizer, hp.max_length, hp.overflow),
            batched=True,
            batch_size=256,
            num_proc=hp.num_proc if hp.num_proc > 1 and len(conversations) > 4 * hp.num_proc else None,
            remove_columns=["messages"],
            features=_token_features(),
            cache_file_name=str(tokens_path.with_suffix(".map.arrow")),
            new_fingerprint=key,
            desc="tokenising",
        )
        # One file under a settled name, whatever num_proc split the work into; map's own files go.
        _write_single_arrow(tokenized, tokens_path)
        for cache_file in tokenized.cache_files:
            Path(cache_file["filename"]).unlink(missing_ok=True)
        return TokenizedFiles(datasets.Dataset.from_file(str(tokens_path)), files, key)

    def _load_if_changed(self) -> None:
        """(Re)load the data when the training files (or what the patterns match) changed since last time."""
        _, source = source_key(self.train_files)
        if self._train is not None and self._loaded_source == source:
            return
        self._train = self._tokenized(self.train_files)
        self._loaded_source = source
        usable = self._train.usable()
        if self.hparams.val_files:
            self._val = self._tokenized(self.hparams.val_files)
            self._train_ids, self._val_ids = usable, self._val.usable()
        else:
            self._val = None
            self._train_ids, self._val_ids = split_ids(usable, self.hparams.val_fraction, self.hparams.seed)
        if not len(self._train_ids):
            raise UserError(f"--data.train_files {self.train_files}: no usable training example (see counts)")
        hp = self.hparams
        self._train_rows = packing.make_rows(self._train_ids, self._train.lengths, packing=hp.packing,
                                             max_length=hp.max_length, seed=hp.seed)  # fmt: skip
        val_source = self._val or self._train
        self._val_rows = packing.make_rows(self._val_ids, val_source.lengths, packing=hp.packing,
                                           max_length=hp.max_length, seed=hp.seed)  # fmt: skip
        self.stats = self._compute_stats()
        rank_zero_info(f"InstructionDataModule: {format_stats(self.stats)}")

    def _loader(self, rows: packing.Rows, source: TokenizedFiles, shuffle: bool, training: bool) -> ResumableDataLoader:
        rank, world, accumulate, epoch = self._trainer_layout()
        hp = self.hparams
        plan_for_epoch = functools.partial(
            _plan, rows, source.num_labels, batch_size=hp.batch_size, shuffle=shuffle,
            group_by_length=hp.group_by_length and shuffle, seed=hp.seed, rank=rank, world_size=world,
            accumulate=accumulate if training else 1,
        )  # fmt: skip
        num_batches = self._batches_per_epoch(rows, rank, world)
        epoch = epoch if training else 0
        sampler = PlannedBatchSampler(plan_for_epoch, num_batches, rank, world, shuffle, hp.seed, epoch)
        dataset = PlannedBatches(source.examples, hp.packing, pad_id_of(self.tokenizer))
        data = fingerprint([source.key, hp.packing, hp.batch_size, hp.seed, hp.group_by_length, shuffle, world,
                            accumulate, len(rows)])  # fmt: skip
        return ResumableDataLoader(dataset, sampler, data, num_workers=hp.num_workers)

    def _trainer_layout(self) -> tuple[int, int, int, int]:
        """(rank, world size, accumulate_grad_batches, current epoch) of the attached trainer, or a lone process."""
        trainer = getattr(self, "trainer", None)
        if trainer is None:
            return 0, 1, 1, 0
        return trainer.global_rank, trainer.world_size, trainer.accumulate_grad_batches, trainer.current_epoch

    def _compute_stats(self) -> dict[str, Any]:
        assert self._train is not None and self._train_rows is not None and self._val_rows is not None
        stats: dict[str, Any] = {"train_" + k: v for k, v in self._train.counts().items()}
        if self._val is not None:
            stats.update({"val_" + k: v for k, v in self._val.counts().items()})
        plan = _plan(self._train_rows, self._train.num_labels, 0, batch_size=self.hparams.batch_size,
                     shuffle=self.hparams.shuffle, group_by_length=self.hparams.group_by_length,
                     seed=self.hparams.seed)  # fmt: skip
        real, computed = packing.computed_tokens(plan)
        stats.update(
            train_examples=len(self._train_ids), val_examples=len(self._val_ids), train_rows=len(self._train_rows),
            train_batches=len(plan), train_tokens=real, real_token_fraction=round(real / max(computed, 1), 4),
        )  # fmt: skip
        return stats


def _plan(rows: packing.Rows, num_labels: np.ndarray, epoch: int, **kwargs: Any) -> packing.EpochPlan:
    return packing.plan_epoch(rows, num_labels, epoch=epoch, **kwargs)


def split_ids(ids: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Seeded split of example ids into (train, validation), each in ascending order."""
    if not fraction:
        return ids, np.zeros(0, dtype=np.int64)
    held = np.random.default_rng([seed, 2]).permutation(len(ids))[: max(1, round(len(ids) * fraction))]
    is_val = np.zeros(len(ids), dtype=bool)
    is_val[held] = True
    return ids[~is_val], ids[is_val]


def format_stats(stats: dict[str, Any]) -> str:
    """One line of counts for the log."""
    return ", ".join(f"{key}={value}" for key, value in stats.items())


def _token_features() -> Any:
    import datasets

    return datasets.Features({
        "source": datasets.Value("string"),
        "input_ids": datasets.List(datasets.Value("int32")),
        "label_mask": datasets.List(datasets.Value("int8")),
        "length": datasets.Value("int32"),
        "num_labels": datasets.Value("int32"),
        "status": datasets.Value("int8"),
    })  # fmt: skip


def _write_single_arrow(dataset: Any, path: Path) -> None:
    """Write ``dataset`` as one Arrow stream file at ``path``, atomically."""
    import pyarrow as pa

    partial = path.with_name(f"{path.name}.{os.getpid()}.partial")
    table = dataset.data.table if hasattr(dataset.data, "table") else dataset.data
    with pa.OSFile(str(partial), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
        for batch in table.to_batches(max_chunksize=4096):
            writer.write_batch(batch)
    os.replace(partial, path)
