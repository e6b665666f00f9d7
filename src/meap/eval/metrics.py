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
