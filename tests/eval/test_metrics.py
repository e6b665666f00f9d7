"""Metrics against hand-computed values."""

import pytest

from meap.eval.metrics import best_subspan_em, first_line, normalize_answer, rouge1_f, substring_match


@pytest.mark.parametrize(
    "raw, normalised",
    [
        ("The Eiffel Tower!", "eiffel tower"),
        ("  an   apple, a pear  ", "apple pear"),
        ("U.S.A.", "usa"),
        ("Theatre of the Absurd", "theatre of absurd"),  # only whole-word articles go
        ("", ""),
    ],
)
def test_normalize_answer(raw, normalised):
    assert normalize_answer(raw) == normalised


def test_best_subspan_em_uses_the_first_line_and_any_gold_answer():
    assert best_subspan_em("It was Paris, the capital.\nBerlin", ["paris"]) == 1.0
    assert best_subspan_em("\n\nThe answer is BERLIN.\nParis", ["Paris", "Berlin"]) == 1.0
    assert best_subspan_em("I think it is London.\nParis", ["Paris"]) == 0.0  # Paris only on line 2
    assert best_subspan_em("The Beatles", ["the beatles", "Beatles"]) == 1.0
    assert best_subspan_em("anything", [""]) == 0.0


def test_first_line_skips_blank_lines():
    assert first_line("\n  \n answer here \nmore") == "answer here"
    assert first_line("") == ""


def test_substring_match():
    assert substring_match("The special magic number is 4821734.", "4821734") == 1.0
    assert substring_match("The number is 482173.", "4821734") == 0.0
    assert substring_match("anything", "") == 0.0


def test_rouge1_f_hand_computed():
    # prediction tokens: [magic, number, is, 42]; reference: [special, magic, number, 42]
    # overlap 3, precision 3/4, recall 3/4 -> F 0.75
    assert rouge1_f("The magic number is 42.", "The special magic number: 42") == pytest.approx(0.75)
    # precision 1/1, recall 1/3 -> F 0.5
    assert rouge1_f("paris", "paris is capital") == pytest.approx(0.5)
    assert rouge1_f("x y", "z") == 0.0
    # repeated tokens are clipped: prediction [a1, a1, a1], reference [a1] -> p 1/3, r 1 -> 0.5
    assert rouge1_f("a1 a1 a1", "a1") == pytest.approx(0.5)
