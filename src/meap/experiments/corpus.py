"""The demo's task (``meap demo``): synthetic key-based retrieval in the NIAH needle format, its training
documents, copy drills and probes, and :func:`materials`, everything an experiment trains and probes on,
drawn from its seed, then written and prepared (:func:`write_materials`).

A document hides needles, "The special magic word for <key> is: <value>.", at random sentence
boundaries of prose from the built-in corpus, then asks for some of them::

    ... The special magic word for ransom is: garden. ... The special magic word for tribute is:
    silver. ...
    Question: What is the special magic word for ransom?
    Answer: garden.

Every needle has the shape of the asked one, so a model that copies *a* value of the context without
matching the key is right only by chance (at most 1 in the number of needles): the task measures lookup by
key, not copying (RULER's multi-key NIAH with word values). The answer does not repeat the needle's words,
so copying the token that followed an earlier "is:" is no shortcut either.

Keys and values are words of the built-in prose that the experiment's tokenizer keeps whole, so each is
one token in training and evaluation alike (the associative-recall setting that small models learn in
minutes). :func:`vocabulary` splits them into training keys, held-out keys and values (some of which may
be held out too). No probe asks for a key that was ever a key in training, so no (key, value) pair of a
probe can have been seen; the words do occur in the prose, so their embeddings are trained.
"""

from __future__ import annotations

import random
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from meap.data.prose import insert_at_depth, prose_sentences, random_passage
from meap.experiments.config import DemoConfig
from meap.fsutil import atomic_write_json, atomic_write_jsonl

# the files of an experiment's directory that this module writes
PROBES_FILE = "probes.jsonl"
EVALUATION_FILE = "evaluation.jsonl"
TOKENIZER_DIR = "tokenizer"
DATA_DIRS = {"corpus": "data", "drills": "drills"}
NEEDLE = "The special magic word for {key} is"
QUESTION = "Question: What is the special magic word for {key}?\nAnswer:"
_WORD = re.compile(r"\b[a-z]{4,10}\b")
_FIRST_WORD_RANK = 100  # the more frequent words are mostly function words


@dataclass(frozen=True)
class Vocabulary:
    """The words of the task, each one token: keys and values, each split into training and held-out."""

    train_keys: tuple[str, ...]
    held_out_keys: tuple[str, ...]
    train_values: tuple[str, ...]
    held_out_values: tuple[str, ...]


def needle(key: str, value: str) -> str:
    return f"{NEEDLE.format(key=key)} {value}."


_NEEDLE_PATTERN = re.compile(re.escape(NEEDLE).replace(re.escape("{key}"), r"(\w+)") + r" (\w+)\.")


def stated_needles(text: str) -> list[tuple[str, str]]:
    """The (key, value) of every needle stated in ``text``, in order."""
    return _NEEDLE_PATTERN.findall(text)


def retrieval_tokenizer(vocab_size: int, seed: int = 0):
    """A byte-level BPE trained on the built-in prose and on needles and questions with random words: it does
    not depend on which words become keys or values, so all of them are cut alike."""
    from meap.data.tokenizer import train_bpe

    sentences = prose_sentences()
    rng = random.Random(f"meap-retrieval-tokenizer:{seed}")
    words = [word for sentence in sentences[:: max(1, len(sentences) // 5000)] for word in sentence.split()]
    templates = [
        f"{needle(rng.choice(words), rng.choice(words))}\n{QUESTION.format(key=rng.choice(words))}"
        for _ in range(len(sentences) // 10)
    ]
    return train_bpe([*sentences, *templates], vocab_size, split_digits=False)


def vocabulary(
    tokenizer, *, keys: int, values: int, held_out_keys: int, held_out_values: int, seed: int = 0
) -> Vocabulary:
    """Frequent words of the built-in prose (from rank 100 on, past the function words) that ``tokenizer``
    keeps whole (one token after a space), drawn at random into ``keys`` keys and ``values`` values, of which
    ``held_out_keys`` and ``held_out_values`` (may be 0) are kept for evaluation."""
    from meap.errors import UserError

    counts = Counter(word for sentence in prose_sentences() for word in _WORD.findall(sentence.lower()))
    whole = [
        word
        for word, _ in counts.most_common()[_FIRST_WORD_RANK:]
        if len(tokenizer(f" {word}", add_special_tokens=False)["input_ids"]) == 1
    ]
    if keys + values > len(whole) or not (0 < held_out_keys < keys and 0 <= held_out_values < values):
        raise UserError(
            f"the tokenizer keeps {len(whole)} prose words whole; {keys} keys and {values} values "
            "(fewer held out) do not fit (a larger vocab_size keeps more)"
        )
    random.Random(f"meap-retrieval-words:{seed}").shuffle(whole)
    key_words, value_words = whole[:keys], whole[keys : keys + values]
    return Vocabulary(
        tuple(sorted(key_words[held_out_keys:])),
        tuple(sorted(key_words[:held_out_keys])),
        tuple(sorted(value_words[held_out_values:])),
        tuple(sorted(value_words[:held_out_values])),
    )


def _context(rng: random.Random, needles: list[str], filler_words: int) -> str:
    """``needles`` at random sentence boundaries of ``filler_words`` words of prose, in random order."""
    context = random_passage(rng, filler_words) if filler_words else ""
    depths = [rng.uniform(0, 100) for _ in needles]
    # inserted from the deepest up, so each depth is about a share of the prose alone
    for text, depth in sorted(zip(needles, depths), key=lambda pair: -pair[1]):
        context = insert_at_depth(context, text, depth)
    return context


def training_documents(
    rng: random.Random,
    count: int,
    vocab: Vocabulary,
    needles: tuple[int, int],
    filler_words: tuple[int, int],
    questions: tuple[int, int] = (1, 1),
    restated: float = 0.0,
) -> list[str]:
    """``count`` documents with ``needles`` (a range) needles, distinct training keys and values in each, then
    ``questions`` (a range, at most half the needles but at least one) of them asked and answered in turn.
    Asking at most half leaves no answer to be found by elimination. ``restated``: the share of needles
    stated a second time, after all first statements (as facts recur in text): each restatement is a lookup
    by key among the needles before it."""
    documents = []
    for _ in range(count):
        number = rng.randint(*needles)
        keys, values = rng.sample(vocab.train_keys, number), rng.sample(vocab.train_values, number)
        stated = [needle(k, v) for k, v in zip(keys, values)]
        context = _context(rng, stated, rng.randint(*filler_words))
        again = [text for text in stated if rng.random() < restated]
        rng.shuffle(again)
        context = " ".join([context, *again])
        asked = rng.sample(range(number), max(1, min(rng.randint(*questions), number // 2)))
        answers = "\n".join(f"{QUESTION.format(key=keys[i])} {values[i]}." for i in asked)
        documents.append(f"{context}\n{answers}")
    return documents


def copy_drills(rng: random.Random, count: int, words: tuple[str, ...], lengths: tuple[int, int]) -> list[str]:
    """A list of random ``words``, then the same list again: copying without keys (the shared start)."""
    drills = []
    for _ in range(count):
        listed = ", ".join(rng.sample(words, rng.randint(*lengths)))
        drills.append(f"Words: {listed}. Again: {listed}.")
    return drills


def copy_probes(rng: random.Random, count: int, words: tuple[str, ...], length: int) -> list[dict]:
    """Probes of copying (the drills' skill): a list of ``length`` words, then the list again cut before a
    word other than the first; the distractors are the list's other words (a model that copies from the
    wrong place gives one of them)."""
    records = []
    for _ in range(count):
        listed = rng.sample(words, length)
        at = rng.randrange(1, length)
        records.append(
            {
                "context": f"Words: {', '.join(listed)}. Again: {', '.join(listed[:at])},",
                "answer": f" {listed[at]}",
                "distractors": [f" {w}" for i, w in enumerate(listed) if i != at],
                "absent": False,
            }
        )
    return records


def probe_records(
    rng: random.Random,
    count: int,
    keys: tuple[str, ...],
    values: tuple[str, ...],
    distractors: int,
    filler_words: tuple[int, int],
    absent: bool = False,
) -> list[dict]:
    """Probes for :mod:`meap.probes` and :mod:`meap.eval.retrieval`: each context ends right before the asked
    value; ``distractors`` other needles hold other values under other keys. ``absent``: the asked needle is
    left out (a control: a key-based model should not give a distractor's value)."""
    records = []
    for _ in range(count):
        chosen, drawn = rng.sample(keys, distractors + 1), rng.sample(values, distractors + 1)
        placed = [needle(k, v) for k, v in zip(chosen, drawn)][1 if absent else 0 :]
        filler = rng.randint(*filler_words)
        context = _context(rng, placed, filler)
        records.append(
            {
                "context": f"{context}\n{QUESTION.format(key=chosen[0])}",
                "answer": f" {drawn[0]}",
                "distractors": [f" {v}" for v in drawn[1:]],
                "key": chosen[0],
                "absent": absent,
                "filler_words": filler,
            }
        )
    return records


# Key and value words: how many of each, and how many keys are held out. Values are shared by training and
# evaluation (a value held out of training gets almost no probability from a small model, which learns the
# values' frequencies first); the pairs are new, since the keys are (BENCHMARKS.md, "Retrieval pilots").
KEYS, VALUES, HELD_OUT_KEYS = 300, 150, 60


def materials(config: DemoConfig) -> dict:
    """Everything the experiment trains and probes on, drawn from ``config.seed``, in memory: the tokenizer,
    the words, the probes, the evaluation prompts, the training documents and the copy drills."""
    tokenizer = retrieval_tokenizer(config.vocab_size, config.seed)
    vocab = vocabulary(
        tokenizer, keys=KEYS, values=VALUES, held_out_keys=HELD_OUT_KEYS, held_out_values=0, seed=config.seed
    )

    def draw(name: str) -> random.Random:
        return random.Random(f"meap-demo-{name}:{config.seed}")

    held_out = (vocab.held_out_keys, vocab.train_values, config.distractors, tuple(config.probe_filler_words))
    words = vocab.train_keys + vocab.train_values  # the drills' words
    if config.task == "copy":
        probes = copy_probes(draw("probes"), config.probes, words, config.distractors + 1)
        evaluation = copy_probes(draw("evaluation"), config.eval_probes, words, config.distractors + 1)
    else:
        probes = probe_records(draw("probes"), config.probes, *held_out)
        evaluation = [
            *probe_records(draw("evaluation"), config.eval_probes, *held_out),
            *probe_records(draw("absent"), config.absent_probes, *held_out, absent=True),
        ]
    return {
        "tokenizer": tokenizer,
        "vocabulary": vocab,
        "probes": probes,
        "evaluation": evaluation,
        "documents": training_documents(
            draw("documents"),
            config.documents,
            vocab,
            tuple(config.needles_per_document),
            tuple(config.filler_words),
            tuple(config.questions_per_document),
        ),
        "drills": copy_drills(draw("drills"), config.drill_documents, words, tuple(config.drill_numbers)),
    }


def trained_length(config: DemoConfig, tokenizer, documents: list[str]) -> int:
    """The longest prompt the branches train positions for: with document attention positions restart in
    every document, so it is the length that 5% of the training documents reach (longer positions are
    rarely trained); else the sequence length."""
    if not config.train.document_attention:
        return config.train.seq_len
    lengths = sorted(len(ids) for ids in tokenizer(documents, add_special_tokens=False)["input_ids"])
    return min(config.train.seq_len, lengths[int(0.95 * (len(lengths) - 1))])


def write_materials(found: dict, output: Path, progress: bool) -> None:
    """The materials as files, and the prepared training data and drills (one BPE for both)."""
    from meap.config.commands import PrepareConfig
    from meap.data.prepare import prepare_corpus

    found["tokenizer"].save_pretrained(output / TOKENIZER_DIR)
    atomic_write_json(output / "vocabulary.json", found["vocabulary"].__dict__)
    atomic_write_jsonl(output / PROBES_FILE, found["probes"])
    atomic_write_jsonl(output / EVALUATION_FILE, found["evaluation"])
    for name, texts in (("corpus", found["documents"]), ("drills", found["drills"])):
        atomic_write_jsonl(output / f"{name}.jsonl", [{"text": text} for text in texts])
        # min_val_tokens=0 for the drills: the shared start does not validate
        prepare_corpus(
            PrepareConfig(
                inputs=[str(output / f"{name}.jsonl")],
                output=str(output / DATA_DIRS[name]),
                tokenizer=str(output / TOKENIZER_DIR),
                num_proc=1,
                overwrite=True,
            ),
            progress=progress,
            **({"min_val_tokens": 0} if name == "drills" else {}),
        )
