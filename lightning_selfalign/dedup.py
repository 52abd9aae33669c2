"""Exact and near-duplicate removal over lists of texts (MinHash LSH from ``datasketch``).

Both functions return a keep-mask (``True`` = keep) in input order; the first occurrence of a duplicate
group is kept, so the result is deterministic for a given input order. Texts are compared after
normalisation (lower case, word tokens), so reflowed whitespace and changed case do not hide a copy.

Near duplicates follow the reference pipeline's defaults: word 5-grams, 250 permutations, Jaccard
threshold 0.7. Unlike the reference, texts shorter than ``ngram`` words are not dropped wholesale: their
whole token sequence becomes one shingle, so they only collide with texts made of the same words.
Empty texts are always kept (there is nothing to compare).
"""

from __future__ import annotations

import functools
import hashlib
import keyword
import re
import zlib
from collections.abc import Sequence

import numpy as np

WORD = re.compile(r"\w+", re.UNICODE)
PLACEHOLDER = "_"
# Names a text introduces (def/class/lambda/as/for targets, assignments, parameters): renaming them
# consistently must not hide a copy, so they all become one placeholder token.
_DEFINED = re.compile(r"\b(?:(?:def|class|as|lambda)\s+(\w+)|for\s+(\w+)(?:\s*,\s*(\w+))?(?:\s*,\s*(\w+))?\s+in\b)")
_ASSIGNED = re.compile(r"^\s*(\w+)\s*(?:[-+*/%&|^@]|//|\*\*|>>|<<)?=(?!=)", re.MULTILINE)
_DEF_PARAMS = re.compile(r"\bdef\s+\w+\s*\(([^)]*)\)")
_PARAM = re.compile(r"(?:^|,)\s*\**\s*(\w+)")
_KEEP = frozenset(keyword.kwlist) | {"self", "cls"}


def word_tokens(text: str) -> list[str]:
    """Lower-cased word tokens: punctuation, whitespace and case changes disappear."""
    return WORD.findall(text.lower())


def defined_names(text: str) -> set[str]:
    """Lower-cased identifiers the text defines: function/class names, parameters, assignment/loop/``as`` targets."""
    names: set[str] = set()
    for match in _DEFINED.finditer(text):
        names.update(group for group in match.groups() if group)
    names.update(_ASSIGNED.findall(text))
    for params in _DEF_PARAMS.findall(text):
        names.update(_PARAM.findall(params))
    return {name.lower() for name in names if name not in _KEEP and not name[0].isdigit()}


def normalized_tokens(text: str) -> list[str]:
    """Lower-cased word tokens with every name the text defines replaced by :data:`PLACEHOLDER`."""
    names = defined_names(text)
    if not names:
        return word_tokens(text)
    return [PLACEHOLDER if token in names else token for token in word_tokens(text)]


def normalize_text(text: str) -> str:
    """The text as its word tokens joined by single spaces (the key for exact duplicates)."""
    return " ".join(word_tokens(text))


def exact_duplicate_mask(texts: Sequence[str]) -> list[bool]:
    """Keep-mask that drops every text whose normalised form appeared earlier in ``texts``."""
    return [first is None for first in exact_duplicate_of(texts)]


def exact_duplicate_of(texts: Sequence[str]) -> list[int | None]:
    """For each text, the index of the first text with the same normalised form, or ``None`` if it is the first."""
    first: dict[bytes, int] = {}
    result: list[int | None] = []
    for position, text in enumerate(texts):
        key = hashlib.blake2b(normalize_text(text).encode("utf-8"), digest_size=16).digest()
        result.append(first.get(key))
        first.setdefault(key, position)
    return result


def shingles(text: str, ngram: int = 5, canonical_names: bool = True) -> set[bytes]:
    """Word ``ngram``-shingles of ``text``; a text shorter than ``ngram`` words is one shingle.

    With ``canonical_names`` the names the text defines are one placeholder (see :func:`normalized_tokens`).
    """
    tokens = normalized_tokens(text) if canonical_names else word_tokens(text)
    if not tokens:
        return set()
    if len(tokens) < ngram:
        return {" ".join(tokens).encode("utf-8")}
    return {" ".join(tokens[i : i + ngram]).encode("utf-8") for i in range(len(tokens) - ngram + 1)}


class MinHasher:
    """MinHash signatures (datasketch, ``affine32`` scheme) of the word shingles of :func:`shingles`.

    Cheap enough for 100k rows: the permutations are drawn once (drawing them per text costs as much as
    hashing), each distinct token is hashed once with CRC-32 (deterministic across processes, unlike
    ``hash``), and a shingle's hash is a polynomial of its token hashes computed for all shingles at once
    with numpy. The shingle *sets* are exactly those of :func:`shingles`; only their hash function differs.
    """

    _MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
    _CACHE_LIMIT = 2_000_000

    def __init__(self, num_perm: int = 250, ngram: int = 5, seed: int = 1, canonical_names: bool = True) -> None:
        from datasketch import MinHash

        self.num_perm = num_perm
        self.ngram = ngram
        self.canonical_names = canonical_names
        self.seed = seed
        # One sketch reused (cleared) per text: building a MinHash costs more than filling it.
        self._sketch = MinHash(num_perm=num_perm, seed=seed, hashfunc=int, scheme="affine32")
        self._token_hash: dict[str, int] = {}

    def _token_hashes(self, tokens: list[str]) -> np.ndarray:
        cache = self._token_hash
        if len(cache) > self._CACHE_LIMIT:
            cache.clear()
        values = []
        for token in tokens:
            value = cache.get(token)
            if value is None:
                value = cache[token] = zlib.crc32(token.encode("utf-8")) + 1
            values.append(value)
        return np.array(values, dtype=np.uint64)

    def shingle_hashes(self, text: str) -> np.ndarray:
        """Distinct 32-bit hashes of the text's shingles (empty for a text without words)."""
        tokens = normalized_tokens(text) if self.canonical_names else word_tokens(text)
        hashes = self._token_hashes(tokens)
        width = min(self.ngram, len(hashes))
        if width == 0:
            return hashes
        count = len(hashes) - width + 1
        with np.errstate(over="ignore"):
            rolled = np.zeros(count, dtype=np.uint64)
            for offset in range(width):
                rolled = (rolled + hashes[offset : offset + count]) * self._MULTIPLIER
        # Fold the high half in: it depends on every token of the shingle.
        return np.unique((rolled >> np.uint64(32)) ^ (rolled & np.uint64(0xFFFFFFFF)))

    def signature(self, text: str) -> np.ndarray | None:
        """The MinHash hash values of ``text`` (``None`` for a text without words)."""
        grams = self.shingle_hashes(text)
        if not len(grams):
            return None
        self._sketch.clear()
        self._sketch.update_batch(grams)
        return self._sketch.hashvalues.copy()

    def signatures(self, texts: Sequence[str]) -> list[np.ndarray | None]:
        return [self.signature(text) for text in texts]


def near_duplicate_mask(
    texts: Sequence[str],
    *,
    threshold: float = 0.7,
    num_perm: int = 250,
    ngram: int = 5,
    canonical_names: bool = True,
    signatures: Sequence[np.ndarray | None] | None = None,
) -> list[bool]:
    """Keep-mask that drops every text whose estimated Jaccard similarity to an earlier kept text is ``>= threshold``.

    ``canonical_names`` (default) makes consistently renamed identifiers invisible, so a copy with renamed
    variables is still a duplicate; ``False`` gives the reference's plain word shingles.
    ``signatures`` (from :meth:`MinHasher.signatures` with the same settings) may be
    computed elsewhere, e.g. in worker processes; otherwise they are computed here.
    """
    return [
        dup is None
        for dup in near_duplicate_of(
            texts,
            threshold=threshold,
            num_perm=num_perm,
            ngram=ngram,
            canonical_names=canonical_names,
            signatures=signatures,
        )
    ]


@functools.cache
def band_params(threshold: float, num_perm: int) -> tuple[int, int]:
    """(bands, rows per band) minimising false positives + negatives at ``threshold`` (datasketch's optimiser)."""
    from datasketch import MinHashLSH

    index = MinHashLSH(threshold=threshold, num_perm=num_perm)
    return index.b, index.r


def near_duplicate_of(
    texts: Sequence[str],
    *,
    threshold: float = 0.7,
    num_perm: int = 250,
    ngram: int = 5,
    canonical_names: bool = True,
    signatures: Sequence[np.ndarray | None] | None = None,
) -> list[int | None]:
    """For each text, the index of the earlier kept text it nearly duplicates, or ``None`` to keep it.

    LSH banding with datasketch's band parameters proposes candidates; each candidate is confirmed by the
    signatures' estimated Jaccard similarity, so a band collision alone never removes a row. Only kept
    texts enter the index. The band tables are plain dicts of signature slices, the same structure as
    ``datasketch.MinHashLSH`` without its per-call overhead (about 10x faster at 100k rows).
    """
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold must be in (0, 1], got {threshold}")
    if signatures is None:
        signatures = MinHasher(num_perm=num_perm, ngram=ngram, canonical_names=canonical_names).signatures(texts)
    if len(signatures) != len(texts):
        raise ValueError(f"got {len(signatures)} signatures for {len(texts)} texts")
    bands, rows = band_params(threshold, num_perm)
    tables: list[dict[bytes, list[int]]] = [{} for _ in range(bands)]
    kept: dict[int, np.ndarray] = {}
    result: list[int | None] = []
    for position, values in enumerate(signatures):
        if values is None:
            result.append(None)
            continue
        keys = [values[band * rows : (band + 1) * rows].tobytes() for band in range(bands)]
        candidates: set[int] = set()
        for table, key in zip(tables, keys):
            candidates.update(table.get(key, ()))
        duplicate = _confirmed_duplicate(values, candidates, kept, threshold)
        result.append(duplicate)
        if duplicate is None:
            kept[position] = values
            for table, key in zip(tables, keys):
                table.setdefault(key, []).append(position)
    return result


def _confirmed_duplicate(
    values: np.ndarray, candidates: set[int], kept: dict[int, np.ndarray], threshold: float
) -> int | None:
    """The earliest candidate whose estimated Jaccard similarity reaches ``threshold``."""
    for candidate in sorted(candidates):
        if float(np.mean(kept[candidate] == values)) >= threshold:
            return candidate
    return None
