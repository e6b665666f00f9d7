"""SFT data: the three formats from JSONL/JSON/Parquet, auto-detection, errors, chat-template segments."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meap.errors import UserError
from meap.sft.formats import read_conversations
from meap.sft.template import render_turns, tokenize_conversation

CHATML = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
ALPACA = {"instruction": "Add the numbers.", "input": "2 and 3", "output": "5"}
SHAREGPT = {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello"}]}
MESSAGES = {
    "messages": [
        {"role": "system", "content": "Be kind."},
        {"role": "user", "content": "Hi"},
        {"role": "assistant", "content": "Hello"},
        {"role": "user", "content": "Again"},
        {"role": "assistant", "content": "Hello again"},
    ]
}


def write_jsonl(path, records):
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return str(path)


def test_formats_are_detected_and_normalised(tmp_path):
    conversations = read_conversations(
        [
            write_jsonl(tmp_path / "a.jsonl", [ALPACA]),
            write_jsonl(tmp_path / "s.jsonl", [SHAREGPT]),
            write_jsonl(tmp_path / "m.jsonl", [MESSAGES]),
        ]
    )
    assert conversations[0] == [
        {"role": "user", "content": "Add the numbers.\n\n2 and 3"},
        {"role": "assistant", "content": "5"},
    ]
    assert conversations[1] == [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    assert [t["role"] for t in conversations[2]] == ["system", "user", "assistant", "user", "assistant"]


def test_json_list_and_parquet(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps([ALPACA, ALPACA]))
    pq.write_table(pa.Table.from_pylist([ALPACA]), tmp_path / "a.parquet")
    assert len(read_conversations([str(tmp_path / "a.json"), str(tmp_path / "a.parquet")], "alpaca")) == 3


@pytest.mark.parametrize(
    "records, fmt, message",
    [
        ([ALPACA, {"instruction": "x"}], None, r"bad\.jsonl:2: missing or non-string `output`"),
        ([{"text": "x"}], None, r"bad\.jsonl:1: cannot tell the format"),
        ([{"instruction": "x", "output": "  "}], None, r"bad\.jsonl:1: empty answer"),
        ([{"messages": [{"role": "robot", "content": "x"}]}], None, r"bad\.jsonl:1: `messages\[0\]\.role`"),
        ([ALPACA], "yaml", "unknown format 'yaml'"),
    ],
)
def test_bad_records_name_file_and_line(tmp_path, records, fmt, message):
    with pytest.raises(UserError, match=message):
        read_conversations([write_jsonl(tmp_path / "bad.jsonl", records)], fmt)


def test_chat_template_pieces_rebuild_the_conversation(gpt2_tokenizer):
    gpt2_tokenizer.chat_template = CHATML
    turns = MESSAGES["messages"]
    pieces = render_turns(gpt2_tokenizer, turns)
    assert "".join(text for text, _ in pieces) == gpt2_tokenizer.apply_chat_template(turns, tokenize=False).rstrip("\n")
    assert [text for text, answer in pieces if answer] == ["Hello<|im_end|>\n", "Hello again<|im_end|>"]
    assert all(not text.startswith("<|im_start|>assistant") for text, answer in pieces if answer)


def test_plain_template_without_a_chat_template(gpt2_tokenizer):
    segments = tokenize_conversation(
        gpt2_tokenizer, [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello"}]
    )
    assert [answer for _, answer in segments] == [False, True]
    assert gpt2_tokenizer.decode(segments[0][0]) == "### Instruction:\nHi\n\n### Response:\n"
    assert gpt2_tokenizer.decode(segments[1][0]) == "Hello\n\n"


def test_builtin_instruction_set_has_long_answers_found_in_the_prompt(builtin_prose, gpt2_tokenizer):
    conversations = read_conversations(["builtin:16"])
    assert conversations == read_conversations(["builtin:16"]) and len(read_conversations([])) == 48
    for turns in conversations:
        prompt, answer = turns[0]["content"], turns[1]["content"]
        assert [t["role"] for t in turns] == ["user", "assistant"]
        assert answer in prompt  # retrieval: the answer is written out from the context, not recalled
        assert len(gpt2_tokenizer(answer)["input_ids"]) > 50  # so MEAP-SFT applies (min_answer_tokens=50)
    with pytest.raises(UserError, match="builtin:N"):
        read_conversations(["builtin:x"])


def test_a_corrupt_parquet_file_is_a_user_error(tmp_path):
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 not really parquet")
    with pytest.raises(UserError, match=r"broken\.parquet: not a readable Parquet file"):
        read_conversations([str(broken)])


def test_no_two_training_seeds_share_an_epoch_order():
    from meap.sft.stream import SFTStream

    conversations = [[([i, i + 1], True)] for i in range(40)]

    def orders(seed):
        stream = SFTStream(conversations, epochs=4, seed=seed)
        return [tuple(item[0][0] for item in stream.items[e * 40 : (e + 1) * 40]) for e in range(4)]

    first, second = orders(0), orders(1)
    assert len(set(first)) == 4 and not set(first) & set(second)  # `seed + epoch` shared 3 of 4
    assert orders(0) == first  # still seeded
