"""The `meap` command on bad input: one line naming the file or key, exit status 2, no traceback."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from transformers import AutoTokenizer


def run_cli(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "meap.cli", *args], capture_output=True, text=True, cwd=cwd,
                          timeout=300)


def assert_user_error(result: subprocess.CompletedProcess, *fragments: str) -> None:
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("meap: error: "), result.stderr
    assert result.stderr.rstrip().endswith(errors[0]), "the error is the last thing printed"
    assert "Traceback" not in result.stderr
    for fragment in fragments:
        assert fragment in errors[0], errors[0]


def test_cli_unknown_key_suggests_the_closest(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text("model: tiny\nmask_ratoi: 0.1\n")
    assert_user_error(run_cli("pretrain", "--config", str(recipe)), str(recipe), "mask_ratoi", "mask_ratio")
    assert_user_error(run_cli("pretrain", "--micro-batch", "8"), "--micro-batch", "--micro-batch-size")


def test_cli_bad_values_name_the_key(tmp_path):
    assert_user_error(run_cli("pretrain", "--mask-ratio", "1.0"), "mask_ratio", "[0, 1)")
    assert_user_error(run_cli("pretrain", "--max-steps", "ten"), "--max-steps", "int")


def test_cli_refuses_sequences_longer_than_the_model(prepared, tmp_path):
    result = run_cli("pretrain", "--data", str(prepared), "--seq-len", "4096", "--output", str(tmp_path / "r"))
    assert_user_error(result, "seq_len", "4096", "2048")


def test_cli_refuses_an_output_holding_another_run(prepared, tmp_path):
    output = tmp_path / "run"
    output.mkdir()
    (output / "config.yaml").write_text("model: tiny\n")
    result = run_cli("pretrain", "--data", str(prepared), "--output", str(output))
    assert_user_error(result, str(output), "--resume", "--overwrite")
    result = run_cli("pretrain", "--data", str(prepared), "--output", str(output), "--resume", "--seq-len", "64")
    assert_user_error(result, "different configuration", "seq_len")


def test_cli_missing_data_directory(tmp_path):
    assert_user_error(run_cli("pretrain", "--data", str(tmp_path / "nope"), "--output", str(tmp_path / "r")),
                      str(tmp_path / "nope"))


@pytest.fixture
def corpus(tmp_path) -> Path:
    (tmp_path / "good.txt").write_text("Some prose about a king.\n", encoding="utf-8")
    return tmp_path


def test_prepare_missing_path(tmp_path):
    assert_user_error(run_cli("prepare", str(tmp_path / "absent.txt"), "-o", str(tmp_path / "out")), "absent.txt")


def test_prepare_empty_corpus(tmp_path):
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    assert_user_error(run_cli("prepare", str(tmp_path / "empty.txt"), "-o", str(tmp_path / "out")), "empty.txt")
    assert not (tmp_path / "out").exists()


def test_prepare_non_utf8_text(corpus):
    (corpus / "latin1.txt").write_bytes("first line\ncaf\xe9\n".encode("latin-1"))
    result = run_cli("prepare", str(corpus / "latin1.txt"), "-o", str(corpus / "out"))
    assert_user_error(result, "latin1.txt", "UTF-8")
    assert not (corpus / "out").exists()


def test_prepare_malformed_jsonl_names_the_line(corpus):
    (corpus / "data.jsonl").write_text(json.dumps({"text": "ok"}) + "\n{not json\n", encoding="utf-8")
    assert_user_error(run_cli("prepare", str(corpus / "data.jsonl"), "-o", str(corpus / "out")), "data.jsonl:2")
    assert not (corpus / "out").exists()


def test_prepare_tokenizer_directory_without_a_tokenizer(corpus):
    (corpus / "not-a-tokenizer").mkdir()
    result = run_cli("prepare", str(corpus / "good.txt"), "--tokenizer", str(corpus / "not-a-tokenizer"),
                     "-o", str(corpus / "out"))
    assert_user_error(result, "not-a-tokenizer")


def test_cli_bad_model_settings(prepared, tmp_path):
    broken = tmp_path / "broken-model"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    result = run_cli("pretrain", "--data", str(prepared), "--model", str(broken), "--output", str(tmp_path / "a"))
    assert_user_error(result, str(broken), "cannot load the model")
    result = run_cli("pretrain", "--data", str(prepared), "--attn-implementation", "bogus",
                     "--output", str(tmp_path / "b"))
    assert_user_error(result, "tiny", "cannot load the model")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()


def test_eval_niah_bad_input(tiny_model_dir, tmp_path):
    not_causal = tmp_path / "t5"
    not_causal.mkdir()
    (not_causal / "config.json").write_text(json.dumps(
        {"model_type": "t5", "vocab_size": 10, "d_model": 8, "num_layers": 1, "num_heads": 1, "d_ff": 8, "d_kv": 8}))
    assert_user_error(run_cli("eval", "niah", "--model", str(not_causal), "-o", str(tmp_path / "a")),
                      "not a causal language model")
    haystack = tmp_path / "hay.txt"
    haystack.write_text("A short haystack. It has two sentences.\n")
    result = run_cli("eval", "niah", "--model", str(tiny_model_dir), "--haystack", str(haystack),
                     "--lengths", "400", "-o", str(tmp_path / "b"))
    assert_user_error(result, "--lengths", "haystack")
    result = run_cli("eval", "niah", "--model", str(tiny_model_dir), "--lengths", "4096", "-o", str(tmp_path / "d"))
    assert_user_error(result, "--lengths", "context of 512")
    (tmp_path / "empty.txt").write_text("\n")
    result = run_cli("eval", "niah", "--model", str(tiny_model_dir), "--haystack", str(tmp_path / "empty.txt"),
                     "-o", str(tmp_path / "c"))
    assert_user_error(result, "empty.txt", "empty")
    assert not any((tmp_path / name).exists() for name in "abcd")


def test_sft_bad_input(tiny_model_dir, tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps({"instruction": "Say it.", "output": "It."}) + "\n")
    sft = ("sft", "--model", str(tiny_model_dir), "--output")
    assert_user_error(run_cli(*sft, str(tmp_path / "a"), "--data", str(good), "--format", "dolly"),
                      "format", "alpaca, sharegpt, messages")
    missing = tmp_path / "missing.jsonl"
    missing.write_text(json.dumps({"instruction": "Say it.", "output": "It."}) + "\n"
                       + json.dumps({"instruction": "No output here."}) + "\n")
    assert_user_error(run_cli(*sft, str(tmp_path / "b"), "--data", str(missing)), "missing.jsonl:2", "output")
    turns = tmp_path / "turns.json"
    turns.write_text(json.dumps([{"messages": [{"role": "user", "content": "Hi"}, {"role": "robot", "content": "x"}]}]))
    assert_user_error(run_cli(*sft, str(tmp_path / "c"), "--data", str(turns)), "turns.json", "item 0", "robot")
    empty = tmp_path / "empty.jsonl"
    empty.write_text(json.dumps({"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": " "}]}))
    assert_user_error(run_cli(*sft, str(tmp_path / "d"), "--data", str(empty)), "empty.jsonl:1", "empty answer")
    assert_user_error(run_cli(*sft, str(tmp_path / "e"), "--data", str(good), "--min-answer-tokens", "-1"),
                      "min_answer_tokens", ">= 0")
    not_causal = tmp_path / "t5"
    not_causal.mkdir()
    (not_causal / "config.json").write_text(json.dumps(
        {"model_type": "t5", "vocab_size": 10, "d_model": 8, "num_layers": 1, "num_heads": 1, "d_ff": 8, "d_kv": 8}))
    assert_user_error(run_cli("sft", "--model", str(not_causal), "--data", str(good), "--output", str(tmp_path / "f")),
                      "not a causal language model")
    assert_user_error(run_cli(*sft, str(tmp_path / "g"), "--data", str(tmp_path / "nope.jsonl")), "nope.jsonl")
    assert_user_error(run_cli(*sft, str(tmp_path / "h"), "--data", str(good), "--max-length", "4096"),
                      "max_length", "512")
    assert_user_error(run_cli(*sft, str(tmp_path / "i"), "--data", str(good), "--lora-rank", "8"),
                      "--lora-rank", "--lora-r")
    strict = tmp_path / "strict-template"
    shutil.copytree(tiny_model_dir, strict)
    tokenizer = AutoTokenizer.from_pretrained(strict)
    tokenizer.chat_template = "{{ raise_exception('roles must alternate user/assistant') }}"
    tokenizer.save_pretrained(strict)
    assert_user_error(run_cli("sft", "--model", str(strict), "--data", str(good), "--max-length", "256",
                              "--output", str(tmp_path / "j")),
                      "good.jsonl: conversation 0", "roles must alternate")
    assert not any((tmp_path / name).exists() for name in "abcdefghij")


def test_analyze_and_compare_bad_input(tiny_model_dir, tmp_path):
    assert_user_error(run_cli("analyze", "attention", "--model", str(tiny_model_dir), "--length", "4096",
                              "-o", str(tmp_path / "a")), "--length", "4096")
    assert_user_error(run_cli("analyze", "attention", "--model", str(tmp_path / "nope"), "-o", str(tmp_path / "b")),
                      "nope", "no such model directory")
    assert_user_error(run_cli("compare", str(tmp_path), str(tmp_path / "nope"), "-o", str(tmp_path / "c")),
                      "not a meap run directory")
    assert_user_error(run_cli("compare", str(tmp_path), "-o", str(tmp_path / "d")), "at least two")
    assert not any((tmp_path / name).exists() for name in "abcd")
