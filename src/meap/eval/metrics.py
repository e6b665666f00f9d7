"""Answer-matching metrics, pure functions: SQuAD normalisation, best-subspan EM, substring match, ROUGE-1 F.

``best_subspan_em`` is lost-in-the-middle's metric: 1 when any normalised gold answer occurs inside the
normalised *first line* of the prediction. ROUGE-1 F is the unigram-overlap F1 of normalised tokens, as the
MEAP paper scores needle retrieval.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable
from functools import lru_cache

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCTUATION = set(string.punctuation)


def normalize_answer(text: str) -> str:
    """Lowercase, drop punctuation and the articles a/an/the, squash whitespace (SQuAD's normalisation)."""
    text = "".join(ch for ch in text.lower() if ch not in _PUNCTUATION)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def first_line(prediction: str) -> str:
    """The first non-empty line of a generation (models often go on after the answer)."""
    for line in prediction.strip().splitlines():
        if line.strip():
            return line.strip()
    return ""


def best_subspan_em(prediction: str, answers: Iterable[str]) -> float:
    """1.0 if a normalised gold answer is a substring of the normalised first line of ``prediction``."""
    predicted = normalize_answer(first_line(prediction))
    return float(any(normalize_answer(answer) in predicted for answer in answers if normalize_answer(answer)))


def substring_match(prediction: str, answer: str) -> float:
    """1.0 if the normalised ``answer`` occurs anywhere in the normalised ``prediction``."""
    expected = normalize_answer(answer)
    return float(bool(expected) and expected in normalize_answer(prediction))


def rouge1_f(prediction: str, reference: str) -> float:
    """ROUGE-1 F-measure: harmonic mean of unigram precision and recall over normalised tokens."""
    predicted = Counter(normalize_answer(prediction).split())
    expected = Counter(normalize_answer(reference).split())
    overlap = sum((predicted & expected).values())
    if overlap == 0:
        return 0.0
    precision = overlap / sum(predicted.values())
    recall = overlap / sum(expected.values())
    return 2 * precision * recall / (precision + recall)


# Judge-free proxies of contextual hallucination in a summary (meap.eval.hallucination).

ROUGE_TYPES = ("rouge1", "rouge2", "rougeL")
ENTITY_RULE = (
    "numbers (digit runs, separators ignored) and runs of capitalised words, leading function words dropped and "
    "a lone capitalised word at a sentence start not counted; supported when found in the document, ignoring case"
)
_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")
_CAPITALISED_RUN = re.compile(r"[A-Z][\w'’-]*(?:[ \t]+[A-Z][\w'’-]*)*")
_SENTENCE_START = re.compile(r"(?:^|[.!?:;]\s+|[\"“(]\s*)$")
_FUNCTION_WORDS = frozenset(
    "a an the this that these those in on at for and but or it he she they we i you his her their its our there "
    "here after before as when while if of to by from with what who which how why where".split()
)


def rouge_scores(prediction: str, reference: str) -> dict[str, float]:
    """ROUGE-1/2/L F-measures (the ``rouge-score`` package, Porter stemming as in the summarisation papers)."""
    return {name: score.fmeasure for name, score in _rouge_scorer().score(reference, prediction).items()}


@lru_cache(maxsize=1)
def _rouge_scorer():
    from rouge_score import rouge_scorer

    return rouge_scorer.RougeScorer(list(ROUGE_TYPES), use_stemmer=True)


def rule_entities(text: str) -> list[str]:
    """The numbers and named-looking spans of ``text`` by :data:`ENTITY_RULE` (no NER model needed)."""
    found = [match.group() for match in _NUMBER.finditer(text)]
    for match in _CAPITALISED_RUN.finditer(text):
        words = match.group().split()
        while words and words[0].lower() in _FUNCTION_WORDS:
            words.pop(0)
        at_start = _SENTENCE_START.search(text[: match.start()]) is not None
        if words and not (len(words) == 1 and at_start and words[0] == match.group().split()[0]):
            found.append(" ".join(words))
    return found


def unsupported_entities(entities: list[str], document: str) -> list[str]:
    """The ``entities`` not found in ``document`` (ignoring case and spacing; numbers ignoring separators)."""
    text = " ".join(document.lower().split())
    numbers = {number.replace(",", "") for number in _NUMBER.findall(document)}
    missing = []
    for entity in entities:
        if _NUMBER.fullmatch(entity):
            if entity.replace(",", "") not in numbers:
                missing.append(entity)
        elif " ".join(entity.lower().split()) not in text:
            missing.append(entity)
    return missing
