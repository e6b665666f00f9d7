"""Key-based retrieval: the task cannot be solved by copying, held-out words never reach training, strict
scoring refuses hedged answers, and the probes score what greedy decoding would answer."""

import json
import random
import re

import pytest
import torch

from meap.eval.retrieval import score_prompts, strict_score
from meap.experiments.corpus import (
    QUESTION,
    copy_drills,
    probe_records,
    retrieval_tokenizer,
    stated_needles,
    training_documents,
    vocabulary,
)
from meap.probes import read_probe_file, score_probes, tokenize_probes

from conftest import tiny_llama


@pytest.fixture(scope="module")
def task(request):
    from meap.data.builtin import builtin_source_files
    from meap.errors import UserError

    try:
        builtin_source_files()
    except UserError as error:
        pytest.skip(str(error))
    tokenizer = retrieval_tokenizer(2048)
    return tokenizer, vocabulary(tokenizer, keys=120, values=60, held_out_keys=30, held_out_values=20)


def test_keys_and_values_are_single_tokens_split_four_ways(task):
    tokenizer, vocab = task
    groups = [vocab.train_keys, vocab.held_out_keys, vocab.train_values, vocab.held_out_values]
    assert [len(g) for g in groups] == [90, 30, 40, 20]
    words = [word for group in groups for word in group]
    assert len(set(words)) == len(words)  # disjoint
    assert all(len(tokenizer(f" {word}", add_special_tokens=False)["input_ids"]) == 1 for word in words)


def test_held_out_keys_and_values_never_reach_training(task):
    _, vocab = task
    documents = training_documents(random.Random(0), 300, vocab, (2, 6), (0, 30), (1, 3))
    keys = {k for d in documents for k, _ in stated_needles(d)}
    values = {v for d in documents for _, v in stated_needles(d)}
    assert keys and keys <= set(vocab.train_keys) and values <= set(vocab.train_values)
    drills = " ".join(copy_drills(random.Random(0), 300, vocab.train_keys + vocab.train_values, (2, 4)))
    assert not set(re.findall(r"\w+", drills)) & set(vocab.held_out_keys + vocab.held_out_values)
    # planted leak: the check above would see a held-out value in training
    leaked = training_documents(
        random.Random(0), 50, type(vocab)(vocab.train_keys, (), vocab.held_out_values, ()), (2, 6), (0, 30)
    )
    assert {v for d in leaked for _, v in stated_needles(d)} & set(vocab.held_out_values)


def test_a_document_answers_questions_about_at_most_half_its_needles(task):
    _, vocab = task
    for document in training_documents(random.Random(1), 200, vocab, (2, 8), (0, 20), (1, 4)):
        context, *answers = document.split("\nQuestion: ")
        stated = dict(stated_needles(context))
        asked = [
            re.fullmatch(r"What is the special magic word for (\w+)\?\nAnswer: (\w+)\.", answer).groups()
            for answer in answers
        ]
        assert 2 <= len(stated) <= 8 and 1 <= len(asked) <= max(1, len(stated) // 2)
        assert all(stated[key] == value for key, value in asked) and len({k for k, _ in asked}) == len(asked)


@pytest.mark.parametrize("distractors", [1, 3])
def test_a_copier_is_right_at_most_one_time_in_the_number_of_needles(task, distractors):
    _, vocab = task
    records = probe_records(random.Random(2), 400, vocab.held_out_keys, vocab.held_out_values, distractors, (0, 60))
    for record in records:
        assert record["context"].endswith(QUESTION.format(key=record["key"]))
        stated = [value for _, value in stated_needles(record["context"])]
        assert sorted(stated) == sorted(v.strip() for v in [record["answer"], *record["distractors"]])
    # copy strategies that ignore the key: the first, the last, or a random stated value
    rng = random.Random(3)
    strategies = {"first": lambda s: s[0], "last": lambda s: s[-1], "random": lambda s: rng.choice(s)}
    for name, choose in strategies.items():
        right = [
            strict_score(
                " " + choose([value for _, value in stated_needles(r["context"])]), r["answer"], r["distractors"]
            )["correct"]
            for r in records
        ]
        assert sum(right) / len(right) < 1 / (distractors + 1) + 0.07, name


def test_absent_probes_leave_the_asked_needle_out(task):
    _, vocab = task
    for record in probe_records(
        random.Random(4), 50, vocab.held_out_keys, vocab.held_out_values, 3, (0, 40), absent=True
    ):
        context = record["context"].rsplit("\nQuestion:", 1)[0]
        assert record["answer"].strip() not in context and f"for {record['key']} is" not in context
        assert all(d.strip() in context for d in record["distractors"])


def test_strict_scoring():
    assert strict_score(" garden.", " garden", [" silver"]) == {"correct": 1.0, "distractor": 0.0}
    assert strict_score(" garden or silver", " garden", [" silver"]) == {"correct": 0.0, "distractor": 0.0}
    assert strict_score(" silver. garden", " garden", [" silver"]) == {"correct": 0.0, "distractor": 1.0}
    assert strict_score("\n\n Garden\nsilver", " garden", [" silver"])["correct"] == 1.0  # first line only
    assert strict_score("", " garden", [" silver"]) == {"correct": 0.0, "distractor": 0.0}
    assert strict_score(" gardening", " garden", [" silver"])["correct"] == 0.0  # a value, not a prefix of one


@pytest.mark.parametrize(
    "answer, distractor",
    [
        (" garden", " silver"),  # a word
        (" 8056020", " 8056021"),  # a number
        ("9f1c3a2e-5b7d-4c1e-8a2f-0d6e4b9c7a11", "9f1c3a2e-5b7d-4c1e-8a2f-0d6e4b9c7a12"),  # a UUID
        (" New York City", " New York"),  # several words, a distractor its prefix
        (" New York", " New York City"),  # ...and the answer the distractor's prefix
    ],
)
def test_strict_scoring_reads_every_answer_shape(answer, distractor):
    right, wrong = {"correct": 1.0, "distractor": 0.0}, {"correct": 0.0, "distractor": 1.0}
    assert strict_score(answer, answer, [distractor]) == right  # an exact answer is right, whatever its shape
    assert strict_score(f'"{answer.strip()}".\nmore', answer, [distractor]) == right
    assert strict_score(distractor, answer, [distractor]) == wrong
    both = strict_score(f"{answer} or {distractor}", answer, [distractor])
    assert both == {"correct": 0.0, "distractor": 0.0}  # naming two values is not an answer


def _greedy_answers(model, tokenizer, records):
    """The token a model's greedy decoding gives first after each context (its top prediction)."""
    answers = []
    with torch.no_grad():
        for record in records:
            ids = tokenizer(record["context"], add_special_tokens=False, return_tensors="pt")["input_ids"]
            answers.append(tokenizer.decode([int(model(input_ids=ids).logits[0, -1].argmax())]))
    return answers


def test_teacher_forced_probes_score_the_greedy_answer(task, tmp_path):
    tokenizer, vocab = task
    model = tiny_llama(len(tokenizer), hidden=32).eval()
    records = probe_records(random.Random(5), 12, vocab.held_out_keys, vocab.held_out_values, 3, (0, 30))
    greedy = _greedy_answers(model, tokenizer, records)
    # a model is right by definition when the answer is its own top prediction, and wrong otherwise
    for record, answer in zip(records, greedy):
        record["answer"], record["distractors"] = answer, [" zzzz" if answer != " zzzz" else " yyyy"]
    path = tmp_path / "probes.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    scores = score_probes(model, tokenize_probes(read_probe_file(path), tokenizer, 256))
    assert scores["accuracy"] == 1.0 and scores["choice"] == 1.0 and 0 < scores["answer_p"] <= 1
    for record in records:
        record["answer"], record["distractors"] = record["distractors"][0], [record["answer"]]
    scores = score_probes(model, tokenize_probes(records, tokenizer))
    assert scores["accuracy"] == 0.0 and scores["choice"] == 0.0
    assert model.training is False


def test_the_evaluation_scores_greedy_answers_strictly(task):
    tokenizer, vocab = task
    tokenizer.padding_side, tokenizer.pad_token = "left", tokenizer.eos_token
    model = tiny_llama(len(tokenizer), hidden=32).eval()
    records = probe_records(random.Random(6), 6, vocab.held_out_keys, vocab.held_out_values, 3, (0, 30))
    records += probe_records(random.Random(7), 3, vocab.held_out_keys, vocab.held_out_values, 3, (0, 30), absent=True)
    greedy = _greedy_answers(model, tokenizer, records)
    for record, answer in zip(records[:3], greedy):
        record["answer"] = answer  # the first three are answered right by construction
    scored, summary = score_prompts(model, tokenizer, records, max_new_tokens=1, attention=True)
    assert [r["correct"] for r in scored[:3]] == [1.0, 1.0, 1.0]
    assert summary["probes"] == 6 and summary["absent_probes"] == 3 and summary["distractors"] == 3
    assert summary["strict"] == sum(r["correct"] for r in scored[:6]) / 6 >= 0.5
    layers = summary["attention"]["layers"]
    assert len(layers) == 2 and all(0 <= layer["answer_mass"] <= 1 and layer["entropy"] > 0 for layer in layers)
    assert summary["attention"]["probes"] == 6
    # the same numbers as every layer's whole weights, asked of the model (what it held before, all at once)
    from meap.eval.retrieval import _value_spans

    model.set_attn_implementation("eager")
    expected = [0.0, 0.0]
    for record in records[:6]:
        ids = tokenizer(record["context"], add_special_tokens=False, return_tensors="pt")["input_ids"]
        spans = _value_spans(tokenizer, record["context"], [record["answer"], *record["distractors"]])
        for index, weights in enumerate(model(input_ids=ids, output_attentions=True).attentions):
            expected[index] += float(weights[0, :, -1, :].float().mean(0)[spans[0]].sum()) / 6
    assert [layer["answer_mass"] for layer in layers] == pytest.approx(expected, abs=1e-6)


def test_probe_files_are_checked_line_by_line(tmp_path):
    from meap.errors import UserError

    path = tmp_path / "probes.jsonl"
    path.write_text('{"context": "a", "answer": " b"}\n{"context": "a", "answer": ""}\n')
    with pytest.raises(UserError, match=r"probes.jsonl:2: expected a JSON object with a string `context`"):
        read_probe_file(path)
    with pytest.raises(UserError, match="probe file not found"):
        read_probe_file(tmp_path / "missing.jsonl")


def test_a_gzipped_probe_file_is_read_as_its_text(tmp_path):
    import gzip

    from meap.probes import read_probe_file

    records = [{"context": "The value for a is 8056020.", "answer": " 8056020", "distractors": [" 17"]}] * 2
    plain = tmp_path / "probes.jsonl"
    plain.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    zipped = tmp_path / "probes.jsonl.gz"
    zipped.write_bytes(gzip.compress(plain.read_bytes()))
    assert read_probe_file(zipped) == read_probe_file(plain) == records
