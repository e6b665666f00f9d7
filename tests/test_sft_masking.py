"""build_sft_example / build_sft_rows: both layouts, exact label positions, the >50 rule, multi-turn, truncation."""

import pytest
import torch

from meap.sft.rows import build_sft_example, build_sft_rows

MASK, EOS, IGNORE = 999, 0, -100
PROMPT = list(range(1, 9))  # 8 prompt tokens
ANSWER = list(range(100, 160))  # 60 answer tokens: above the default 50


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


def test_short_answers_and_ratio_zero_give_one_plain_row():
    for answer, ratio in ((ANSWER[:50], 0.1), (ANSWER, 0.0)):
        rows = build_sft_example(
            PROMPT, answer, mask_token_id=MASK, eos_token_id=EOS, mask_ratio=ratio, generator=gen()
        )
        assert [r["kind"] for r in rows] == ["ntp"]
        assert rows[0]["input_ids"].tolist() == PROMPT + answer + [EOS]
        assert rows[0]["labels"].tolist() == [IGNORE] * len(PROMPT) + answer + [EOS]


def test_the_rule_is_strictly_more_than_min_answer_tokens():
    rows = build_sft_example(PROMPT, ANSWER[:51], mask_token_id=MASK, eos_token_id=EOS, generator=gen())
    assert [r["kind"] for r in rows] == ["concat"]
    rows = build_sft_example(
        PROMPT, ANSWER[:10], mask_token_id=MASK, eos_token_id=EOS, min_answer_tokens=5, generator=gen()
    )
    assert [r["kind"] for r in rows] == ["concat"]


def test_concat_layout_labels():
    (row,) = build_sft_example(PROMPT, ANSWER, mask_token_id=MASK, eos_token_id=EOS, generator=gen())
    original = PROMPT + ANSWER + [EOS]
    n = len(original)
    ids, labels = row["input_ids"].tolist(), row["labels"].tolist()
    assert len(ids) == len(labels) == 2 * n
    assert ids[:n] == original and labels[:n] == [IGNORE] * len(PROMPT) + ANSWER + [EOS]
    copy, copy_labels = ids[n:], labels[n:]
    masked = [p for p, token in enumerate(copy) if token == MASK]
    assert len(masked) == round(0.1 * len(ANSWER)) == 6
    assert all(len(PROMPT) <= p < len(PROMPT) + len(ANSWER) for p in masked), "only answer tokens are masked"
    assert copy[: len(PROMPT)] == PROMPT and copy[-1] == EOS
    assert [p for p, label in enumerate(copy_labels) if label != IGNORE] == masked
    assert all(copy_labels[p] == original[p] for p in masked), "a masked position's label is its hidden token"
    assert all(copy[p] == original[p] for p in range(n) if p not in masked)


def test_separate_layout_rows():
    original_row, masked_row = build_sft_example(
        PROMPT, ANSWER, mask_token_id=MASK, eos_token_id=EOS, layout="separate", generator=gen()
    )
    assert original_row["kind"] == "original" and masked_row["kind"] == "masked"
    assert original_row["input_ids"].tolist() == PROMPT + ANSWER + [EOS]
    masked = masked_row["input_ids"] == MASK
    assert int(masked.sum()) == 6
    assert torch.equal(masked_row["labels"] != IGNORE, masked)
    assert torch.equal(masked_row["labels"][masked], original_row["input_ids"][masked])


def test_multi_turn_supervises_and_masks_every_assistant_turn():
    system, first, user, second = [1, 2], list(range(100, 130)), [3, 4, 5], list(range(200, 240))
    segments = [(system, False), (first, True), (user, False), (second, True)]
    (row,) = build_sft_rows(segments, mask_token_id=MASK, eos_token_id=EOS, generator=gen())
    conversation = system + first + user + second + [EOS]
    n = len(conversation)
    assert row["labels"][:n].tolist() == [IGNORE] * 2 + first + [IGNORE] * 3 + second + [EOS]
    masked = (row["input_ids"][n:] == MASK).nonzero().flatten().tolist()
    answer_positions = set(range(2, 32)) | set(range(35, 75))
    assert len(masked) == round(0.1 * 70) and set(masked) <= answer_positions


def test_masks_differ_between_epochs_and_repeat_for_a_seed():
    def mask_of(seed):
        (row,) = build_sft_example(PROMPT, ANSWER, mask_token_id=MASK, eos_token_id=EOS, generator=gen(seed))
        return row["input_ids"].tolist()

    assert mask_of(1) == mask_of(1)
    assert len({tuple(mask_of(epoch)) for epoch in range(5)}) == 5


def test_truncation():
    n = len(PROMPT) + len(ANSWER) + 1
    # A concat row that does not fit falls back to the (fitting) plain row, marked so it can be counted.
    (row,) = build_sft_example(PROMPT, ANSWER, mask_token_id=MASK, eos_token_id=EOS, max_length=n + 5, generator=gen())
    assert row["kind"] == "ntp-fallback" and row["input_ids"].tolist() == PROMPT + ANSWER + [EOS]
    # Rows longer than max_length are cut at the end.
    rows = build_sft_example(
        PROMPT, ANSWER, mask_token_id=MASK, eos_token_id=EOS, layout="separate", max_length=20, generator=gen()
    )
    assert all(len(r["input_ids"]) == len(r["labels"]) == 20 for r in rows)
    assert rows[0]["labels"].tolist() == [IGNORE] * 8 + ANSWER[:12]
    # A prompt that fills max_length leaves nothing to learn: no row.
    assert build_sft_example(PROMPT, ANSWER[:5], mask_token_id=MASK, eos_token_id=EOS, max_length=8) == []


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"mask_ratio": 1.0}, "mask_ratio"),
        ({"layout": "zip"}, "layout"),
        ({"min_answer_tokens": -1}, "min_answer_tokens"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        build_sft_example(PROMPT, ANSWER, mask_token_id=MASK, eos_token_id=EOS, **kwargs)


def test_a_conversation_without_answer_is_refused():
    with pytest.raises(ValueError, match="answer"):
        build_sft_example(PROMPT, [], mask_token_id=MASK, eos_token_id=EOS)


def test_a_conversation_already_ending_in_eos_gets_no_second_one():
    (row,) = build_sft_rows([(PROMPT, False), (ANSWER[:10] + [EOS], True)], mask_token_id=MASK, eos_token_id=EOS)
    assert row["input_ids"].tolist() == PROMPT + ANSWER[:10] + [EOS]
    assert row["labels"].tolist()[-1] == EOS
