"""The docstring-quality judge of the seeds stage: the base model says whether a docstring alone is enough to
re-implement its function (the reference's ``seed_gathering/filter_dataset.py``, last step).

Facts followed: the prompt is a GitHub issue in StarCoder2's pretraining markup (``<issue_start>``,
``<issue_comment>``, ``Upvotes:``); the function is shown without its docstring, the docstring (unindented,
stripped) below it; seven worked answers, three "No" and four "Yes", each with a short rationale, precede the
query in a shuffled order; the model answers greedily, at most 5 tokens, stopping at a newline; a seed is kept
only when its answer says "yes" more often than "no" (case-insensitive counts, so a tie drops it). The wording
and the seven examples are this project's own.

Departure: the example order is drawn per seed from ``seed`` and the seed's id (the reference reshuffles one
global list on every call, so a seed's prompt depended on how many came before it).
"""

from __future__ import annotations

import random
import textwrap
from collections.abc import Sequence
from typing import Any

from lightning_selfalign.jsonl import stable_id

JUDGE_SEED = 42  # the reference's random.seed
MAX_NEW_TOKENS = 5
STOP = ("\n",)
REPLY = "<issue_comment>username_1: Happy to take a look.\nMy answer is:"
REQUEST = """<issue_start>username_0: Could someone review the description I wrote for a Python function?
I want to turn it into the function's docstring.

The function, without its docstring:
```py
{code}
```

My description:
```
{doc}
```

Please judge the text only; there is no need to run the function or to check that it works.
Answer "Yes" if the description alone tells enough to write the function again, otherwise "No".
Answer "No" as well if the description and the function disagree."""

# (function with its docstring, answer, rationale): this project's own examples.
EXAMPLES: tuple[tuple[str, str, str], ...] = (
    (
        '''def send_report(rows, address):
    """Email the weekly report to the given address."""
    lines = [",".join(map(str, row)) for row in rows]
    return "\\n".join(lines)''',
        "No",
        "The function only joins the rows into CSV text; it sends nothing, so the description does not match it.",
    ),
    (
        '''def prepare(config):
    """Helper used by the setup code."""
    paths = {}
    for key in ("train", "valid", "test"):
        paths[key] = config["root"] + "/" + config[key]
    return paths''',
        "No",
        "Calling it a helper says nothing about what it computes: the three keys and how each path is built are "
        "missing.",
    ),
    (
        '''def score(values, weights):
    """Return the score."""
    total = sum(v * w for v, w in zip(values, weights))
    return total / max(1, len(values))''',
        "No",
        '"The score" could be anything; the weighted sum and the division by the count are not described.',
    ),
    (
        '''def clamp(value, low, high):
    """Return value limited to the closed interval [low, high]: low if it is smaller, high if it is larger,
    otherwise value itself."""
    return max(low, min(value, high))''',
        "Yes",
        "The description gives the interval, which bound applies on each side, and the unchanged case.",
    ),
    (
        '''def chunk(items, size):
    """Split items into consecutive lists of `size` elements; the last list holds whatever remains and may be
    shorter. Returns the list of lists."""
    return [items[i:i + size] for i in range(0, len(items), size)]''',
        "Yes",
        "Order, chunk size, the shorter last chunk and the return type are all stated.",
    ),
    (
        '''def word_counts(text):
    """Count how often each word occurs in text, splitting on whitespace and ignoring case.
    Returns a dict from lower-cased word to count."""
    counts = {}
    for word in text.lower().split():
        counts[word] = counts.get(word, 0) + 1
    return counts''',
        "Yes",
        "The splitting rule, the case folding and the shape of the result are enough to write it again.",
    ),
    (
        '''def is_leap(year):
    """True if year is a leap year in the Gregorian calendar: divisible by 4, except centuries, which must be
    divisible by 400."""
    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)''',
        "Yes",
        "The rule is spelled out completely, including the exception for centuries.",
    ),
)


def split_docstring(code: str) -> tuple[str, str]:
    """(docstring unindented and stripped, code with the docstring and its quotes removed), as the reference
    shows them; the first triple-double-quoted string is the docstring."""
    start = code.find('"""')
    end = code.find('"""', start + 4) if start >= 0 else -1
    if start < 0 or end < 0:
        return "", code
    doc = textwrap.dedent(code[start + 3 : end].strip("\n"))
    return doc.strip(), code[:start] + code[end + 3 :]


def _request(code: str) -> str:
    doc, body = split_docstring(code)
    return REQUEST.format(code=body, doc=doc)


def judge_prompt(code: str, key: str, seed: int = JUDGE_SEED) -> str:
    """The judge's prompt for one seed function: the examples in an order drawn from ``seed`` and ``key``."""
    examples = list(EXAMPLES)
    random.Random(int(stable_id("seed-judge", seed, key), 16)).shuffle(examples)
    shots = "".join(f"{_request(example)}{REPLY} {answer}\n\n{rationale}\n\nUpvotes: 200"
                    for example, answer, rationale in examples)  # fmt: skip
    return f"{shots}{_request(code)}\nUpvotes: 100{REPLY}"


def approves(answer: str) -> bool:
    """The reference's decision: "yes" counted more often than "no" in the lower-cased answer."""
    lowered = answer.lower()
    return lowered.count("yes") > lowered.count("no")


def judge_seeds(seeds: Sequence[dict[str, Any]], engine: Any, seed: int = JUDGE_SEED) -> list[bool]:
    """Keep-mask over ``seeds`` (rows with ``id`` and ``seed``): the engine's greedy verdict on each docstring."""
    from lightning_selfalign.engines import Request, Sampling

    requests = [Request(text=judge_prompt(row["seed"], row["id"], seed), messages=None, stop=STOP, seed=index)
                for index, row in enumerate(seeds)]  # fmt: skip
    completions = engine.generate(requests, Sampling(temperature=0.0, top_p=1.0, max_new_tokens=MAX_NEW_TOKENS))
    return [approves(completion.text) for completion in completions]
