"""The built-in corpus as prose: titled sources of usable sentences (stage directions, speaker names and
headings dropped, verse lines joined), random passages of them, and needles inserted at a depth of a text.
The synthetic tasks (MDQA's documents, NIAH's haystacks, the demo's corpus) are built from these.
"""

from __future__ import annotations

import bisect
import itertools
import random
import re
import string
from dataclasses import dataclass
from functools import lru_cache

_BRACKETED = re.compile(r"\[[^\]]*\]")  # Shakespeare's stage directions
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
_SHOUTED_WORD = re.compile(r"\b[A-Z]{2,}\b")  # speaker names and headings ("LAFEU", "ACT I")
_ROMAN_NUMERAL = re.compile(r"[IVX]+\W?")
_MINOR_TITLE_WORDS = {"a", "an", "and", "as", "for", "in", "of", "on", "or", "the", "to"}
_SENTENCE_WORDS = (5, 40)  # prose sentences outside this range (headings, long verse runs) are not used
# where a needle may go: after a sentence's end (closing quotes and brackets included) or between paragraphs
_BOUNDARY = re.compile(r"[.!?][\"')\]]*(?:\s+|$)|\n\s*\n")


@dataclass(frozen=True)
class ProseSource:
    """A built-in document as a title and its usable prose sentences."""

    title: str
    sentences: tuple[str, ...]


@dataclass(frozen=True, eq=False)
class ProseCorpus:
    """The prose sources, and after each its running sentence count (to draw a sentence uniformly)."""

    sources: tuple[ProseSource, ...]
    sentence_ends: tuple[int, ...]


def random_start(rng: random.Random, corpus: ProseCorpus) -> tuple[int, int]:
    """(source, sentence) uniform over all sentences of the corpus, so long works weigh more."""
    position = rng.randrange(corpus.sentence_ends[-1])
    source_index = bisect.bisect_right(corpus.sentence_ends, position)
    return source_index, position - (corpus.sentence_ends[source_index - 1] if source_index else 0)


def random_passage(rng: random.Random, words: int) -> str:
    """About ``words`` words of consecutive prose sentences from a random place in the built-in corpus."""
    corpus = prose_corpus()
    source_index, start = random_start(rng, corpus)
    return " ".join(consecutive_sentences(corpus.sources[source_index].sentences, start, words))


def prose_sentences() -> list[str]:
    """Every usable prose sentence of the built-in corpus, in corpus order."""
    return [sentence for source in prose_corpus().sources for sentence in source.sentences]


def consecutive_sentences(sentences: tuple[str, ...], start: int, words: int) -> list[str]:
    """Sentences from ``start`` on until ``words`` words; taken from before ``start`` if the source ends."""
    passage: list[str] = []
    count = 0
    end = start
    while count < words and end < len(sentences):
        passage.append(sentences[end])
        count += len(sentences[end].split())
        end += 1
    while count < words and start > 0:
        start -= 1
        passage.insert(0, sentences[start])
        count += len(sentences[start].split())
    return passage


@lru_cache(maxsize=1)
def prose_corpus() -> ProseCorpus:
    """The built-in documents as prose sentences (≈ 2 s, once per process); raises :class:`UserError` if
    the asset packages are missing."""
    from meap.data.builtin import builtin_documents

    sources = []
    for document in builtin_documents():
        title, _, body = document.partition("\n")
        sentences = tuple(_prose_sentences(body))
        if sentences:
            sources.append(ProseSource(_readable_title(title.strip()), sentences))
    return ProseCorpus(tuple(sources), tuple(itertools.accumulate(len(source.sentences) for source in sources)))


def _prose_sentences(text: str):
    """Sentences of running prose: stage directions, speaker names and headings dropped, verse lines joined."""
    for paragraph in _BRACKETED.sub(" ", text).split("\n\n"):
        lines = [line for line in paragraph.splitlines() if not _is_heading(line)]
        for sentence in _SENTENCE_END.split(" ".join(" ".join(lines).split())):
            length = len(sentence.split())
            if (
                _SENTENCE_WORDS[0] <= length <= _SENTENCE_WORDS[1]
                and sentence[0].isupper()
                and sentence[-1] in ".!?"
                and not _SHOUTED_WORD.search(sentence)
                and not any(ch.isdigit() for ch in sentence)
            ):
                yield sentence


def _is_heading(line: str) -> bool:
    """A speaker name, act or scene heading: mostly upper-case letters."""
    letters = [ch for ch in line if ch.isalpha()]
    return bool(letters) and sum(ch.isupper() for ch in letters) > 0.6 * len(letters)


def _readable_title(title: str) -> str:
    """Shakespeare's upper-case titles in title case ("All's Well That Ends Well"); others as they are."""
    if not title.isupper():
        return title
    words = []
    for i, word in enumerate(title.split()):
        if _ROMAN_NUMERAL.fullmatch(word):
            words.append(word)
        elif i and word.lower() in _MINOR_TITLE_WORDS:
            words.append(word.lower())
        else:
            words.append(string.capwords(word.lower()))
    return " ".join(words)


def insert_at_depth(context: str, needle: str, depth: float) -> str:
    """``context`` with ``needle`` inserted at the last sentence boundary at or before ``depth`` % of it."""
    target = int(len(context) * min(max(depth, 0.0), 100.0) / 100)
    boundaries = [m.end() for m in _BOUNDARY.finditer(context) if m.end() <= target] if target else []
    cut = boundaries[-1] if boundaries else 0
    before, after = context[:cut], context[cut:]
    if before and not before[-1].isspace():
        before += " "
    return f"{before}{needle} {after}".rstrip()
