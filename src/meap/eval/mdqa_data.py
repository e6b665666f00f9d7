"""Synthetic multi-document QA in the lost-in-the-middle format, answerable only from the documents.

Each example asks about one invented fact ("The harbour master of Velmora is Odrin Castellane."): the
names are made of random syllables, so no pretrained model can know the answer and only retrieval from
the context scores. The fact sits at a random sentence boundary of a ~100-word prose passage from the
built-in corpus (:func:`meap.data.builtin.builtin_documents`), the gold document; ``num_docs - 1`` other
passages are the distractors. With ``distractors="hard"`` (the default) each distractor holds a fact of the
same shape about other invented names ("The harbour master of Dorvu is Kelin Marsa."), so that only the
question's key (Velmora) tells the gold document apart, as in real multi-document QA where every retrieved
passage looks relevant; ``"filler"`` leaves the distractors as prose, and the one fact of the prompt is then
found by its shape alone (a single-needle test). Like Wikipedia passages in NQ-Open, every document is titled
by its source (a play or a Bible book), so the title does not give the gold document away. No distractor
contains the answer or the invented names of the question's fact (checked with the metric's normalisation).
What it is not: real questions about real text; the facts are one sentence in five shapes, and the prose
around them is unrelated to them.

The lines are those of lost-in-the-middle's ``nq-open-*_gold_at_*.jsonl.gz``::

    {"question": str, "answers": [str], "ctxs": [{"title", "text", "hasanswer", "isgold"}, ...]}

Every example draws from its own random stream seeded by ``(seed, index)``, and the gold document is
moved to ``gold_position`` only after the draw: files made with the same seed and ``num_docs`` but
different gold positions hold the same questions and documents in the same order, as in the paper's
protocol, and fewer ``examples`` give a prefix of more. The distractors' facts come from a stream of their own,
so hard and filler files of the same seed hold the same passages.
"""

from __future__ import annotations

import gzip
import json
import random
from dataclasses import dataclass
from pathlib import Path

from tqdm.auto import tqdm

from meap.config import checked
from meap.config.commands import MakeMDQAConfig
from meap.data.prose import ProseCorpus, consecutive_sentences, prose_corpus, random_start
from meap.eval.metrics import normalize_answer
from meap.fsutil import atomic_open

PASSAGE_WORDS = MakeMDQAConfig.passage_words  # documents about as long as NQ-Open's Wikipedia passages
_MAX_DRAWS = 1000  # passage draws per document before giving up (a hit on an invented name is very rare)


@dataclass(frozen=True)
class _FactTemplate:
    """A fact sentence, its question, and which slot of theirs is the answer."""

    fact: str
    question: str
    answer_slot: str


_FACT_TEMPLATES = (
    _FactTemplate("The {role} of {place} is {person}.", "Who is the {role} of {place}?", "person"),
    _FactTemplate("{person} was born in the village of {place}.", "In which village was {person} born?", "place"),
    _FactTemplate(
        "The capital of the island of {island} is {place}.", "What is the capital of the island of {island}?", "place"
    ),
    _FactTemplate(
        "The {institution} of {place} was founded in {year}.",
        "In what year was the {institution} of {place} founded?",
        "year",
    ),
    _FactTemplate(
        "The ship captained by {person} is named the {ship}.",
        "What is the name of the ship captained by {person}?",
        "ship",
    ),
)
_INVENTED_SLOTS = ("person", "place", "island", "ship", "year")
_ROLES = ("harbour master", "mayor", "chief librarian", "lighthouse keeper", "head brewer", "schoolmaster")
_INSTITUTIONS = ("observatory", "botanical garden", "clockmakers' guild", "lending library", "rowing club")
_ONSETS = ("b", "br", "c", "d", "dr", "f", "g", "h", "k", "l", "m", "n", "p", "r", "s", "t", "th", "v", "z")
_VOWELS = ("a", "e", "i", "o", "u", "a", "e", "o", "ai", "ou")
_CODAS = ("", "", "", "l", "n", "r", "s")


def make_mdqa(config: MakeMDQAConfig, progress: bool = False) -> Path:
    """Write ``config.examples`` synthetic questions, each over ``num_docs`` documents of about
    ``passage_words`` words with the gold one at ``gold_position`` (0-based) and ``distractors`` of a kind in
    :data:`MDQA_DISTRACTORS`, to ``config.output``; return its path.

    The file is gzipped JSONL when ``output`` ends in ``.gz`` (byte-identical for the same arguments),
    plain JSONL otherwise, and appears whole or not at all (a temporary file is renamed into place).
    """
    checked(config)
    corpus = prose_corpus()
    output = Path(config.output)
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(output, "wb") as raw:
        # mtime=0 and no file name in the gzip header keep the bytes a function of the arguments alone.
        stream = gzip.GzipFile(fileobj=raw, mode="wb", filename="", mtime=0) if output.suffix == ".gz" else raw
        with stream:
            for index in tqdm(range(config.examples), desc="mdqa examples", unit="example", disable=not progress):
                example = make_example(
                    config.seed,
                    index,
                    config.num_docs,
                    config.gold_position,
                    corpus,
                    config.passage_words,
                    config.distractors,
                )
                stream.write((json.dumps(example, ensure_ascii=False) + "\n").encode("utf-8"))
    return output


def make_mdqa_files(
    directory: Path,
    name: str,
    gold_positions,
    *,
    num_docs: int,
    examples: int,
    seed: int,
    passage_words: int,
    distractors: str,
) -> list[Path]:
    """One file per gold position, the same questions in each (the paper's protocol), in ``directory`` as
    ``{name}-{num_docs}docs_gold_at_{position}.jsonl.gz`` (``{name}-hard-...`` with hard distractors); files
    already there are kept."""
    directory.mkdir(parents=True, exist_ok=True)
    files = []
    kind = "-hard" if distractors == "hard" else ""  # filler files keep the names they had before hard ones existed
    for gold in gold_positions:
        path = directory / f"{name}{kind}-{num_docs}docs_gold_at_{gold}.jsonl.gz"
        if not path.is_file():
            make_mdqa(
                MakeMDQAConfig(
                    output=str(path),
                    num_docs=num_docs,
                    gold_position=gold,
                    examples=examples,
                    seed=seed,
                    passage_words=passage_words,
                    distractors=distractors,
                )
            )
        files.append(path)
    return files


def training_conversation(
    seed: int | str,
    index: int,
    num_docs: int,
    passage_words: int = PASSAGE_WORDS,
    corpus: ProseCorpus | None = None,
    distractors: str = MakeMDQAConfig.distractors,
) -> dict:
    """A fine-tuning conversation in the MDQA format (``{"messages": [user, assistant]}``): the user turn is the
    evaluation's prompt (:func:`meap.eval.mdqa.build_prompt`) over an example of the stream ``seed`` with the
    gold document at a random position; the answer gives the short answer first (what greedy evaluation reads),
    then quotes the gold document whole, so it is long enough (about 70 tokens for 40-word documents) for
    MEAP-SFT's masked copy and teaches copying from the context rather than the facts themselves."""
    from meap.eval.mdqa import build_prompt

    position = random.Random(f"meap-mdqa-train:{seed}:{index}").randrange(num_docs)
    example = make_example(seed, index, num_docs, position, corpus, passage_words, distractors)
    gold = example["ctxs"][position]
    answer = (
        f"{example['answers'][0]}. Document [{position + 1}] (Title: {gold['title']}) says so; it reads: "
        f'"{gold["text"]}"'
    )
    return {
        "messages": [{"role": "user", "content": build_prompt(example)}, {"role": "assistant", "content": answer}],
        "answers": example["answers"],
    }


def make_training_conversations(
    output: Path, examples: int, *, num_docs: int, seed: int | str, passage_words: int, distractors: str
) -> Path:
    """``examples`` conversations of :func:`training_conversation` as JSONL at ``output`` (whole or not at all)."""
    corpus = prose_corpus()
    output.parent.mkdir(parents=True, exist_ok=True)
    with atomic_open(output, "w") as stream:
        for index in range(examples):
            record = training_conversation(seed, index, num_docs, passage_words, corpus, distractors)
            stream.write(json.dumps(record, ensure_ascii=False) + "\n")
    return output


def make_example(
    seed: int | str,
    index: int,
    num_docs: int,
    gold_position: int,
    corpus: ProseCorpus | None = None,
    passage_words: int = PASSAGE_WORDS,
    distractors: str = MakeMDQAConfig.distractors,
) -> dict:
    """Example ``index`` of the stream ``seed``: the fact in a gold passage plus ``num_docs - 1`` distractors
    (``hard``: each with a fact of the same shape about other names), the gold one moved last to
    ``gold_position``."""
    rng = random.Random(f"meap-mdqa:{seed}:{index}")
    corpus = corpus or prose_corpus()
    template = rng.choice(_FACT_TEMPLATES)
    slots = _fill_slots(rng)
    fact = template.fact.format(**slots)
    answer = slots[template.answer_slot]
    # The answer, and the invented names that the question asks about, must occur only in the gold document.
    forbidden = [slots[name] for name in _INVENTED_SLOTS if slots[name] in fact]
    used: set[tuple[int, int]] = set()
    fact_words = len(fact.split())
    gold_title, gold_sentences = _draw_passage(rng, corpus, max(1, passage_words - fact_words), forbidden, used)
    gold_sentences.insert(rng.randrange(len(gold_sentences) + 1), fact)
    gold = {"title": gold_title, "text": " ".join(gold_sentences), "hasanswer": True, "isgold": True}
    documents = []
    # the distractors' facts draw from their own stream: the passages are those of a filler file
    facts = random.Random(f"meap-mdqa-distractors:{seed}:{index}") if distractors == "hard" else None
    taken = [normalize_answer(slots[name]) for name in _INVENTED_SLOTS]
    for _ in range(num_docs - 1):
        title, sentences = _draw_passage(rng, corpus, passage_words, forbidden, used)
        if facts is not None:
            sentences.insert(facts.randrange(len(sentences) + 1), _distractor_fact(facts, template, slots, taken))
        documents.append({"title": title, "text": " ".join(sentences), "hasanswer": False, "isgold": False})
    documents.insert(gold_position, gold)
    return {"question": template.question.format(**slots), "answers": [answer], "ctxs": documents}


def _distractor_fact(rng: random.Random, template: _FactTemplate, slots: dict[str, str], taken: list[str]) -> str:
    """``template`` about invented names none of which is in ``taken`` (the question's names and earlier
    distractors'; extended here), with the role or institution of ``slots``: only the key differs."""
    while True:
        other = {**_fill_slots(rng), "role": slots["role"], "institution": slots["institution"]}
        names = [normalize_answer(other[name]) for name in _INVENTED_SLOTS]
        if not any(name in known or known in name for name in names for known in taken):
            taken.extend(names)
            return template.fact.format(**other)


def _fill_slots(rng: random.Random) -> dict[str, str]:
    """Values for every template slot; the invented names are pairwise distinct."""
    names: list[str] = []
    while len(names) < 4:
        name = _invented_word(rng)
        if name not in names:
            names.append(name)
    return {
        "person": f"{names[0]} {_invented_word(rng)}",
        "place": names[1],
        "island": names[2],
        "ship": names[3],
        "year": str(rng.randrange(1400, 1900)),
        "role": rng.choice(_ROLES),
        "institution": rng.choice(_INSTITUTIONS),
    }


def _invented_word(rng: random.Random) -> str:
    """A capitalised two- or three-syllable nonsense name such as "Velmora"."""
    syllables = [rng.choice(_ONSETS) + rng.choice(_VOWELS) + rng.choice(_CODAS) for _ in range(rng.choice((2, 2, 3)))]
    return "".join(syllables).capitalize()


def _draw_passage(
    rng: random.Random, corpus: ProseCorpus, words: int, forbidden: list[str], used: set[tuple[int, int]]
) -> tuple[str, list[str]]:
    """(title, consecutive sentences of about ``words`` words) from a source, not yet in ``used``, holding
    none of ``forbidden``. Start sentences are uniform over the whole corpus, so long works weigh more."""
    forbidden = [normalize_answer(text) for text in forbidden]
    for _ in range(_MAX_DRAWS):
        source_index, start = random_start(rng, corpus)
        if (source_index, start) in used:
            continue
        source = corpus.sources[source_index]
        sentences = consecutive_sentences(source.sentences, start, words)
        text = normalize_answer(" ".join(sentences))
        if not any(name in text for name in forbidden):
            used.add((source_index, start))
            return source.title, sentences
    raise RuntimeError(f"no passage without {forbidden} in {_MAX_DRAWS} draws")  # the names are nonsense words
