"""MeapSFTCollator and SFTStream: rows per batch, masks per epoch, packing that changes no row's loss."""

import pytest
import torch

from meap.masking import sample_generators
from meap.sft.collator import conversation_segments
from meap.sft.rows import build_sft_rows
from meap.sft.stream import SFTStream

from conftest import tiny_llama
from sft_cases import CONVERSATIONS, EOS, IGNORE, MASK, PAD, collator, per_row_token_losses, samples


def test_unpacked_batch_holds_each_conversations_rows_right_padded():
    batch = collator()(samples())
    expected = [
        build_sft_rows(
            CONVERSATIONS[i],
            mask_token_id=MASK,
            eos_token_id=EOS,
            mask_ratio=0.1,
            generator=sample_generators(0, [i])[0],
        )[0]
        for i in range(len(CONVERSATIONS))
    ]
    assert [r["kind"] for r in expected] == ["concat", "ntp", "concat", "concat"]
    width = max(len(r["input_ids"]) for r in expected)
    assert batch["input_ids"].shape == batch["labels"].shape == batch["attention_mask"].shape == (4, width)
    for b, row in enumerate(expected):
        n = len(row["input_ids"])
        assert batch["input_ids"][b, :n].tolist() == row["input_ids"].tolist()
        assert batch["labels"][b, :n].tolist() == row["labels"].tolist()
        assert batch["attention_mask"][b].tolist() == [1] * n + [0] * (width - n)
        assert (batch["input_ids"][b, n:] == PAD).all() and (batch["labels"][b, n:] == IGNORE).all()
    assert "position_ids" not in batch


def test_separate_layout_gives_two_rows_per_long_conversation():
    batch = collator(layout="separate")(samples())
    assert batch["input_ids"].shape[0] == 3 * 2 + 1  # three long conversations, one short


def test_masks_are_a_function_of_sample_index_and_differ_between_epochs():
    stream = SFTStream(CONVERSATIONS, epochs=3, seed=5)
    assert len(stream) == 12
    by_conversation = {}
    for n in range(len(stream)):
        sample = stream[n]
        assert sample["sample_index"] == n
        key = CONVERSATIONS.index(sample["segments"])
        by_conversation.setdefault(key, []).append(collator().rows(sample)[0]["input_ids"])
    masked = by_conversation[0]  # 60 answer tokens: 6 masked in the copy, drawn anew each epoch
    assert len(masked) == 3 and not torch.equal(masked[0], masked[1]) and not torch.equal(masked[1], masked[2])
    first = next(stream[n] for n in range(len(stream)) if CONVERSATIONS.index(stream[n]["segments"]) == 0)
    again = collator().rows(first)[0]["input_ids"]
    assert torch.equal(again, collator().rows(first)[0]["input_ids"])  # same (seed, index): same mask
    assert not torch.equal(again, collator(seed=1).rows(first)[0]["input_ids"])


def test_stream_epochs_are_seeded_permutations_identical_for_any_objective():
    stream = SFTStream(CONVERSATIONS, epochs=2, seed=3)
    for epoch in range(2):
        seen = sorted(CONVERSATIONS.index(stream[n]["segments"]) for n in range(4 * epoch, 4 * epoch + 4))
        assert seen == [0, 1, 2, 3]
    order = [CONVERSATIONS.index(stream[n]["segments"]) for n in range(8)]
    assert order == [CONVERSATIONS.index(SFTStream(CONVERSATIONS, epochs=2, seed=3)[n]["segments"]) for n in range(8)]
    assert order != [CONVERSATIONS.index(SFTStream(CONVERSATIONS, epochs=2, seed=4)[n]["segments"]) for n in range(8)]
    assert [stream[n]["segments"] for n in range(4)] != [stream[n]["segments"] for n in range(4, 8)]


def test_packing_bins_fit_max_length_and_visit_every_conversation_once_per_epoch():
    lengths = [sum(len(r["input_ids"]) for r in collator().rows({"segments": c})) for c in CONVERSATIONS]
    stream = SFTStream(CONVERSATIONS, epochs=2, seed=0, pack_lengths=lengths, max_length=200)
    visits = [
        (CONVERSATIONS.index(c["segments"]), c["sample_index"]) for n in range(len(stream)) for c in stream[n]["pack"]
    ]
    assert sorted(index for _, index in visits) == list(range(8))
    for n in range(len(stream)):
        assert sum(lengths[CONVERSATIONS.index(c["segments"])] for c in stream[n]["pack"]) <= 200
    assert len(stream) < len(visits)  # something was packed together
    # A conversation longer than a pack (the separate layout's two rows, say) gets a pack of its own.
    small = SFTStream(CONVERSATIONS, seed=0, pack_lengths=lengths, max_length=100)
    for n in range(len(small)):
        members = [CONVERSATIONS.index(c["segments"]) for c in small[n]["pack"]]
        assert len(members) == 1 or sum(lengths[m] for m in members) <= 100
    assert sum(len(small[n]["pack"]) for n in range(len(small))) == 4


@pytest.mark.parametrize("attention", ["sdpa", "eager"])
@pytest.mark.parametrize("layout", ["concat", "separate"])
def test_packed_and_unpacked_batches_give_every_row_the_same_loss(attention, layout):
    model = tiny_llama(100, layers=2, hidden=32)
    model.config._attn_implementation = attention
    model.eval()
    unpacked = collator(layout=layout, max_length=400)(samples())
    packed = collator(layout=layout, max_length=400, packing=True, packed_attention=attention)(
        [{"pack": samples([0, 1])}, {"pack": samples([2, 3])}]
    )
    assert packed["input_ids"].shape[0] == 2 and packed["attention_mask"].dim() == 4
    if attention == "eager":
        assert packed["attention_mask"].dtype == torch.float32
    expected, got = per_row_token_losses(model, unpacked), per_row_token_losses(model, packed)
    assert len(expected) == len(got) == unpacked["input_ids"].shape[0]
    for want, have in zip(expected, got):
        torch.testing.assert_close(have, want, rtol=1e-4, atol=1e-5)
    # Row-start labels would be predicted from the row before: packing never supervises them.
    starts = packed["position_ids"] == 0
    assert (packed["labels"][starts] == IGNORE).all()
    assert int((packed["labels"] != IGNORE).sum()) == int((unpacked["labels"][:, 1:] != IGNORE).sum())


def test_flash_attention_packing_is_one_flat_sequence_split_by_position_ids():
    packed = collator(max_length=400, packing=True, packed_attention="flash_attention_2")(
        [{"pack": samples([0, 1])}, {"pack": samples([2, 3])}]
    )
    unpacked = collator(max_length=400)(samples())
    assert "attention_mask" not in packed and packed["input_ids"].shape == (1, int(unpacked["attention_mask"].sum()))
    assert int((packed["position_ids"] == 0).sum()) == 4  # one start per row
    separate = collator(max_length=100, layout="separate", packing=True)([{"pack": samples([0])}])
    assert separate["input_ids"].shape[1] == 2 * 69  # one conversation's two rows may exceed max_length together


def test_packed_rows_cannot_see_each_other_without_the_mask():
    """The control: position_ids alone do not isolate rows in transformers' SDPA path."""
    model = tiny_llama(100).eval()
    packed = collator(max_length=400, packing=True)([{"pack": samples([0, 1])}])
    unpacked = collator(max_length=400)(samples([0, 1]))
    del packed["attention_mask"]
    expected, got = per_row_token_losses(model, unpacked), per_row_token_losses(model, packed)
    assert not torch.allclose(got[1], expected[1])


def test_trl_style_samples_and_token_counting():
    ids = [1, 2, 3] + list(range(10, 70)) + [EOS]
    sample = {"input_ids": ids, "completion_mask": [0, 0, 0] + [1] * 61}
    assert conversation_segments(sample) == [([1, 2, 3], False), (list(range(10, 70)) + [EOS], True)]
    batch = collator(count_tokens=True)([sample, {"input_ids": ids[:10], "assistant_masks": [0, 0, 0] + [1] * 7}])
    assert batch["input_ids"].shape == (2, 2 * len(ids))  # concat row: the original and its masked copy
    assert int(batch["num_tokens"]) == 2 * len(ids) + 11  # the short one gains its EOS
    assert int((batch["input_ids"][0] == MASK).sum()) == 6
    labelled = {"input_ids": ids, "labels": [-100] * 3 + ids[3:]}
    assert conversation_segments(labelled) == conversation_segments(sample)
    with pytest.raises(ValueError, match="completion_mask"):
        collator()([{"input_ids": ids}])
