"""Key-value retrieval as lost-in-the-middle runs it, on its own data file (../shared/data)."""

import json

import pytest

from meap.cli import main
from meap.errors import UserError
from meap.eval.kind import read_records
from meap.eval.kv_retrieval import (
    KVRetrievalConfig,
    arranged_pairs,
    build_prompt,
    evaluate,
    is_correct,
    read_kv_examples,
)

from conftest import tiny_llama


@pytest.fixture(scope="module")
def kv_file(shared_data):
    return shared_data / "lost-in-the-middle" / "kv-retrieval-75_keys.jsonl.gz"


def test_the_prompt_is_lost_in_the_middles_own():
    pairs = [["k1", "v1"], ["k2", "v2"], ["k3", "v3"]]
    data = '{"k1": "v1",\n "k2": "v2",\n "k3": "v3"}'
    instruction = "Extract the value corresponding to the specified key in the JSON object below."
    assert build_prompt(pairs, "k2") == f'{instruction}\n\nJSON data:\n{data}\n\nKey: "k2"\nCorresponding value:'
    assert build_prompt(pairs, "k2", query_aware=True) == (
        f'{instruction}\n\nKey: "k2"\n\nJSON data:\n{data}\n\nKey: "k2"\nCorresponding value:'
    )


def test_the_official_rule_is_the_value_anywhere_in_the_output_ignoring_case():
    value = "bb3ba2a5-7de8-434b-a86e-a88bb9fa7289"
    assert is_correct(f'The value is "{value.upper()}".', value)
    assert is_correct(value, value)
    assert not is_correct(value[:-1], value)  # one character short of the UUID
    assert not is_correct("d1ff29be-4e2a-4208-a182-0cea716be3d4", value)


def test_the_real_file_reads_and_its_asked_pair_moves_and_stays_among_the_kept_pairs(kv_file):
    examples = read_kv_examples(kv_file)
    assert len(examples) == 500 and all(len(e["ordered_kv_records"]) == 75 for e in examples)
    example = examples[0]
    asked = [example["key"], example["value"]]
    original = example["ordered_kv_records"]
    for gold in (0, 4, 9):
        pairs, position = arranged_pairs(example, 10, gold)
        assert len(pairs) == 10 and position == gold and pairs[gold] == asked
        others = [pair for pair in pairs if pair != asked]
        assert others == [pair for pair in original if pair != asked][:9]  # the first others, in the file's order
    pairs, position = arranged_pairs(example, None, None)
    assert pairs == original and position == original.index(asked)
    pairs, _ = arranged_pairs(example, None, 74)
    assert pairs[74] == asked and sorted(map(tuple, pairs)) == sorted(map(tuple, original))
    with pytest.raises(UserError, match="has only 75 pairs"):
        arranged_pairs(example, 76, None)


def test_a_run_on_the_real_file_scores_by_the_official_rule(kv_file, gpt2_tokenizer, tmp_path):
    model = tmp_path / "tiny"
    tiny_llama(len(gpt2_tokenizer), max_positions=1024).save_pretrained(model)
    gpt2_tokenizer.save_pretrained(model)
    config = KVRetrievalConfig(
        model=str(model), data=str(kv_file), output=str(tmp_path / "out"), gold_index=[0, 3], num_pairs=4, limit=3
    )
    summary = evaluate(config)
    records = read_records(tmp_path / "out" / "results.jsonl")
    assert len(records) == 6 and summary["prompts"] == 6 and summary["examples"] == 3
    assert {r["gold_index"] for r in records} == {0, 3} and summary["num_pairs"] == [4]
    for record in records:
        assert record["prompt"].count('": "') == 4 and f'Key: "{record["key"]}"' in record["prompt"]
        assert record["correct"] == float(record["value"].lower() in record["output"].lower())
    assert summary["accuracy"] == sum(r["correct"] for r in records) / 6
    assert set(summary["by_gold_index"]) == {"0", "3"}
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["kind"] == "kv-retrieval"
    assert (tmp_path / "out" / "kv_retrieval.png").is_file()


def test_smollm2_finds_values_and_its_records_rescore_to_the_reported_accuracy(kv_file, tmp_path, capsys):
    """A real model on real data: the packaged SmolLM2-135M-Instruct, 4 pairs, the asked one first."""
    output = tmp_path / "kv"
    argv = ["eval", "kv-retrieval", "--model", "smollm2-135m", "--data", str(kv_file), "--num-pairs", "4"]
    with pytest.raises(SystemExit) as exit_info:
        main([*argv, "--gold-index", "0", "--limit", "4", "--batch-size", "4", "-o", str(output), "--no-progress"])
    assert exit_info.value.code == 0
    summary = json.loads((output / "summary.json").read_text())
    records = read_records(output / "results.jsonl")
    rescored = sum(r["value"].lower() in r["output"].lower() for r in records) / len(records)
    assert summary["accuracy"] == rescored > 0
    low, high = summary["ci95"]
    assert low <= summary["accuracy"] <= high
    assert f"kv-retrieval: accuracy {summary['accuracy']:.3f}" in capsys.readouterr().out
