"""Exact and MinHash-LSH near-duplicate masks on realistic responses."""

from __future__ import annotations

import random

from helpers import BODIES

from lightning_selfalign.dedup import (
    exact_duplicate_mask,
    exact_duplicate_of,
    near_duplicate_mask,
    near_duplicate_of,
    normalize_text,
    shingles,
)

RESPONSE = (
    """To merge overlapping intervals, sort them by their start and sweep once, extending the last merged
interval while the next one starts before it ends. Sorting costs O(n log n) and the sweep is linear.

```python
"""
    + BODIES["merge_intervals"]
    + """
```

Tests:

```python
assert merge_intervals([[1, 3], [2, 6], [8, 10]]) == [[1, 6], [8, 10]]
assert merge_intervals([]) == []
```"""
)

OTHER = """Count word frequencies with a dictionary, lower-casing each word and skipping punctuation, then return
the most common words first; ties are broken alphabetically so the output is deterministic.

```python
def top_words(text, k):
    counts = {}
    for word in text.lower().split():
        word = word.strip(".,;:!?")
        if word:
            counts[word] = counts.get(word, 0) + 1
    return sorted(counts, key=lambda w: (-counts[w], w))[:k]
```"""


def reflowed(text: str) -> str:
    """Same text with runs of spaces doubled, trailing blanks and an extra blank line per paragraph."""
    return "\n".join("  ".join(line.split()) + "   " for line in text.splitlines()).replace("\n   \n", "\n\n\n")


def test_exact_dedup_ignores_case_and_whitespace() -> None:
    texts = [RESPONSE, OTHER, reflowed(RESPONSE).upper(), RESPONSE + "\n\n"]
    assert exact_duplicate_mask(texts) == [True, True, False, False]
    assert exact_duplicate_of(texts) == [None, None, 0, 0]
    assert normalize_text("A  b\n\tC!") == "a b c"


def test_near_dedup_catches_renamed_variable_and_reflowed_copy() -> None:
    renamed = RESPONSE.replace("ordered", "by_start").replace("pair", "item")
    texts = [RESPONSE, OTHER, reflowed(renamed), OTHER.replace("counts", "tally")]
    assert near_duplicate_of(texts) == [None, None, 0, 1]
    assert near_duplicate_mask(texts) == [True, True, False, False]


def test_near_dedup_keeps_different_solutions_to_similar_tasks() -> None:
    variants = [
        RESPONSE,
        OTHER,
        OTHER.split("```python")[0] + "```python\nimport collections\n"
        "def top_words(text, k):\n    return [w for w, _ in collections.Counter(text.split()).most_common(k)]\n```",
    ]
    assert near_duplicate_mask(variants) == [True, True, True]


def test_short_texts_are_compared_not_dropped() -> None:
    texts = ["x = 1", "y = 2", "x = 1", "", "", "print(x)"]
    # Shorter than 5 words: one shingle each, so only the identical one goes; empty texts are kept.
    assert near_duplicate_mask(texts) == [True, True, False, True, True, True]
    assert shingles("a b") == {b"a b"}


def test_masks_are_deterministic_and_keep_the_first_occurrence() -> None:
    rng = random.Random(0)
    words = [f"w{i}" for i in range(300)]
    base = [" ".join(rng.choice(words) for _ in range(80)) for _ in range(50)]
    texts = base + [text.replace(text.split()[3], "changed", 1) for text in base[:10]]
    first = near_duplicate_of(texts)
    assert first == near_duplicate_of(texts)
    assert first[:50] == [None] * 50
    assert first[50:] == list(range(10))
