"""The synthetic multi-document QA generator, on real files in tmp_path.

Run: ``.venv/bin/python -m pytest tests/data/test_mdqa.py -q``
"""

import gzip
import json

import pytest

from meap.config.commands import MakeMDQAConfig
from meap.errors import UserError
from meap.eval.mdqa_data import make_mdqa
from meap.eval.metrics import normalize_answer

pytestmark = pytest.mark.usefixtures("builtin_prose")


def read_lines(path):
    with gzip.open(path, "rt", encoding="utf-8") as lines:
        return [json.loads(line) for line in lines]


def test_lines_have_the_lost_in_the_middle_keys_and_types(tmp_path):
    path = make_mdqa(MakeMDQAConfig(output=str(tmp_path / "qa.jsonl.gz"), num_docs=5, gold_position=2, examples=10))
    examples = read_lines(path)
    assert len(examples) == 10
    for example in examples:
        assert set(example) == {"question", "answers", "ctxs"}
        assert isinstance(example["question"], str) and example["question"].endswith("?")
        assert len(example["answers"]) == 1 and isinstance(example["answers"][0], str)
        assert len(example["ctxs"]) == 5
        for ctx in example["ctxs"]:
            assert set(ctx) == {"title", "text", "hasanswer", "isgold"}
            assert isinstance(ctx["title"], str) and ctx["title"]
            assert isinstance(ctx["hasanswer"], bool) and isinstance(ctx["isgold"], bool)
            assert 60 <= len(ctx["text"].split()) <= 200  # about 100 words


@pytest.mark.parametrize("num_docs, gold_position", [(1, 0), (6, 0), (6, 3), (6, 5)])
def test_gold_document_sits_at_the_requested_position_and_alone_holds_the_answer(tmp_path, num_docs, gold_position):
    path = make_mdqa(
        MakeMDQAConfig(
            output=str(tmp_path / "qa.jsonl.gz"), num_docs=num_docs, gold_position=gold_position, examples=8, seed=3
        )
    )
    for example in read_lines(path):
        answer = normalize_answer(example["answers"][0])
        flags = [(ctx["isgold"], ctx["hasanswer"]) for ctx in example["ctxs"]]
        assert flags == [(i == gold_position, i == gold_position) for i in range(num_docs)]
        holders = [i for i, ctx in enumerate(example["ctxs"]) if answer in normalize_answer(ctx["text"])]
        assert holders == [gold_position]


def test_same_seed_gives_identical_bytes_and_gold_positions_share_questions(tmp_path):
    first = make_mdqa(
        MakeMDQAConfig(output=str(tmp_path / "a.jsonl.gz"), num_docs=4, gold_position=1, examples=6, seed=7)
    )
    again = make_mdqa(
        MakeMDQAConfig(output=str(tmp_path / "b.jsonl.gz"), num_docs=4, gold_position=1, examples=6, seed=7)
    )
    assert first.read_bytes() == again.read_bytes()
    other_seed = read_lines(
        make_mdqa(MakeMDQAConfig(output=str(tmp_path / "c.jsonl.gz"), num_docs=4, gold_position=1, examples=6, seed=8))
    )
    assert [e["question"] for e in other_seed] != [e["question"] for e in read_lines(first)]

    moved = read_lines(
        make_mdqa(MakeMDQAConfig(output=str(tmp_path / "d.jsonl.gz"), num_docs=4, gold_position=3, examples=6, seed=7))
    )
    for at_one, at_three in zip(read_lines(first), moved):
        assert at_one["question"] == at_three["question"] and at_one["answers"] == at_three["answers"]
        assert at_one["ctxs"][1] == at_three["ctxs"][3]  # the same gold document, moved
        assert [c for i, c in enumerate(at_one["ctxs"]) if i != 1] == at_three["ctxs"][:3]

    prefix = read_lines(
        make_mdqa(MakeMDQAConfig(output=str(tmp_path / "e.jsonl.gz"), num_docs=4, gold_position=1, examples=2, seed=7))
    )
    assert prefix == read_lines(first)[:2]


def test_plain_jsonl_without_gz_suffix_and_no_temporary_left(tmp_path):
    path = make_mdqa(MakeMDQAConfig(output=str(tmp_path / "sub" / "qa.jsonl"), num_docs=2, gold_position=1, examples=3))
    lines = path.read_text(encoding="utf-8").splitlines()
    assert len(lines) == 3 and json.loads(lines[0])["ctxs"][1]["isgold"]
    assert sorted(p.name for p in path.parent.iterdir()) == ["qa.jsonl"]


@pytest.mark.parametrize(
    "arguments, message",
    [
        (dict(num_docs=0, gold_position=0), "num_docs must be at least 1"),
        (dict(num_docs=5, gold_position=5), r"gold_position must be in \[0, 5\)"),
        (dict(num_docs=5, gold_position=-1), "gold_position must be in"),
        (dict(examples=0), "examples must be at least 1"),
    ],
)
def test_bad_arguments_are_user_errors_and_write_nothing(tmp_path, arguments, message):
    with pytest.raises(UserError, match=message):
        make_mdqa(MakeMDQAConfig(output=str(tmp_path / "qa.jsonl.gz"), **arguments))
    assert list(tmp_path.iterdir()) == []


def _fact_patterns():
    """Each fact template as a regex whose groups are its slots."""
    import re

    from meap.eval.mdqa_data import _FACT_TEMPLATES, _INSTITUTIONS, _ROLES

    slot = {
        "role": "|".join(map(re.escape, _ROLES)),
        "institution": "|".join(map(re.escape, _INSTITUTIONS)),
        "year": r"\d{4}",
    }

    def pattern(fact):
        return re.compile(
            re.sub(
                r"\\\{(\w+)\\\}",
                lambda m: f"(?P<{m[1]}>{slot.get(m[1], '[A-Z][a-z]+(?: [A-Z][a-z]+)?')})",
                re.escape(fact),
            )
        )

    return [pattern(template.fact) for template in _FACT_TEMPLATES]


def test_hard_distractors_hold_a_fact_of_the_gold_ones_shape_about_other_names(tmp_path):
    hard = read_lines(
        make_mdqa(
            MakeMDQAConfig(output=str(tmp_path / "hard.jsonl.gz"), num_docs=5, gold_position=2, examples=12, seed=4)
        )
    )
    filler = read_lines(
        make_mdqa(
            MakeMDQAConfig(
                output=str(tmp_path / "filler.jsonl.gz"),
                num_docs=5,
                gold_position=2,
                examples=12,
                seed=4,
                distractors="filler",
            )
        )
    )
    assert (
        read_lines(
            make_mdqa(
                MakeMDQAConfig(
                    output=str(tmp_path / "default.jsonl.gz"), num_docs=5, gold_position=2, examples=12, seed=4
                )
            )
        )
        == hard
    )  # hard is the default
    patterns = _fact_patterns()
    shapes = set()
    for with_facts, plain in zip(hard, filler):
        assert with_facts["question"] == plain["question"] and with_facts["ctxs"][2] == plain["ctxs"][2]
        gold = [match for p in patterns for match in [p.search(plain["ctxs"][2]["text"])] if match]
        assert len(gold) == 1
        shape, gold_names = gold[0].re, set(gold[0].groupdict().values())
        shapes.add(shape.pattern)
        answer = normalize_answer(plain["answers"][0])
        for index in (0, 1, 3, 4):
            found = [p.search(with_facts["ctxs"][index]["text"]) for p in patterns]
            assert [bool(match) for match in found] == [p.pattern == shape.pattern for p in patterns]
            match = found[[p.pattern for p in patterns].index(shape.pattern)]
            names = {value for key, value in match.groupdict().items() if key not in ("role", "institution")}
            assert not names & gold_names  # other names: only the question's key tells the gold document apart
            assert answer not in normalize_answer(with_facts["ctxs"][index]["text"])
            # the passage around the distractor's fact is the filler file's
            assert (
                with_facts["ctxs"][index]["text"].replace(match.group(0), "").split()
                == plain["ctxs"][index]["text"].split()
            )
    assert len(shapes) > 1


def test_unknown_distractor_kind_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="distractors: expected one of hard, filler"):
        make_mdqa(MakeMDQAConfig(output=str(tmp_path / "qa.jsonl.gz"), distractors="easy"))
    assert list(tmp_path.iterdir()) == []
