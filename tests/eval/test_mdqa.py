"""Multi-document QA evaluation: reading, prompting and an end-to-end run on a tiny random Llama.

Run: ``.venv/bin/python -m pytest tests/eval/test_mdqa.py -q``
"""

import gzip
import json

import pytest

from meap.config.commands import MakeMDQAConfig
from meap.errors import UserError
from meap.eval.mdqa import INSTRUCTION, MDQAConfig, build_prompt, evaluate, gold_position, read_mdqa
from meap.eval.mdqa_data import make_mdqa

from conftest import tiny_llama

RESULT_KEYS = {"file", "gold_position", "question", "answers", "prediction", "best_subspan_em"}


pytestmark = pytest.mark.usefixtures("builtin_prose")


def save_tiny_llama(directory, tokenizer, max_positions=4096):
    """A randomly initialised two-layer Llama with ``tokenizer`` as a Hugging Face model directory."""
    tiny_llama(len(tokenizer), max_positions=max_positions).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def write_gzip_lines(path, lines):
    with gzip.open(path, "wt", encoding="utf-8") as file:
        file.write("\n".join(lines) + "\n")
    return path


def test_generated_file_round_trips_into_prompts_with_documents_in_order(tmp_path):
    path = make_mdqa(
        MakeMDQAConfig(output=str(tmp_path / "qa_gold_at_2.jsonl.gz"), num_docs=4, gold_position=2, examples=3)
    )
    examples = read_mdqa(path)
    assert len(examples) == 3
    for example in examples:
        prompt = build_prompt(example)
        assert prompt.startswith(INSTRUCTION + "\n\nDocument [1](Title: ")
        assert prompt.endswith(f"\n\nQuestion: {example['question']}\nAnswer:")
        offsets = [
            prompt.index(f"Document [{i}](Title: {ctx['title']}) {ctx['text']}\n")
            for i, ctx in enumerate(example["ctxs"], 1)
        ]
        assert offsets == sorted(offsets)
        assert gold_position(example, path) == 2


def test_gold_position_falls_back_to_the_file_name(tmp_path):
    example = {"question": "q?", "answers": ["a"], "ctxs": [{"title": "t", "text": "x", "hasanswer": False}]}
    assert gold_position(example, tmp_path / "nq-open-20_total_documents_gold_at_14.jsonl.gz") == 14
    assert gold_position(example, tmp_path / "questions.jsonl") is None


def test_plain_jsonl_is_read_too(tmp_path):
    line = json.dumps({"question": "q?", "answers": ["a"], "ctxs": [{"title": "t", "text": "x"}]})
    path = tmp_path / "plain.jsonl"
    path.write_text(f"{line}\n\n{line}\n", encoding="utf-8")
    assert len(read_mdqa(path)) == 2


def test_malformed_json_line_is_named(tmp_path):
    good = json.dumps(
        read_mdqa(make_mdqa(MakeMDQAConfig(output=str(tmp_path / "good.jsonl.gz"), num_docs=2, examples=1)))[0]
    )
    path = write_gzip_lines(tmp_path / "bad.jsonl.gz", [good, good, '{"question": "cut off'])
    with pytest.raises(UserError, match=r"bad\.jsonl\.gz:3: malformed JSON"):
        read_mdqa(path)


@pytest.mark.parametrize(
    "example, message",
    [
        ({"question": "q?", "ctxs": []}, r":2: missing key `answers`"),
        ({"question": 3, "answers": ["a"], "ctxs": []}, r":2: `question` must be a string"),
        ({"question": "q?", "answers": "a", "ctxs": []}, r":2: `answers` must be a list"),
        (
            {"question": "q?", "answers": ["a"], "ctxs": [{"title": "t", "text": "x"}, {"text": "y"}]},
            r":2: missing key `ctxs\[1\]\.title`",
        ),
    ],
)
def test_missing_or_mistyped_key_is_named_with_its_line(tmp_path, example, message):
    good = json.dumps({"question": "q?", "answers": ["a"], "ctxs": []})
    path = write_gzip_lines(tmp_path / "keys.jsonl.gz", [good, json.dumps(example)])
    with pytest.raises(UserError, match=r"keys\.jsonl\.gz" + message):
        read_mdqa(path)


def test_empty_and_missing_files_are_user_errors(tmp_path):
    empty = tmp_path / "empty.jsonl.gz"
    with gzip.open(empty, "wt") as file:
        file.write("\n")
    with pytest.raises(UserError, match="empty.jsonl.gz: no examples"):
        read_mdqa(empty)
    with pytest.raises(UserError, match="no such file"):
        read_mdqa(tmp_path / "absent.jsonl.gz")


def test_run_end_to_end_on_a_tiny_random_llama(tmp_path, gpt2_tokenizer):
    model_dir = save_tiny_llama(tmp_path / "model", gpt2_tokenizer)
    files = [
        str(
            make_mdqa(
                MakeMDQAConfig(
                    output=str(tmp_path / f"qa_gold_at_{position}.jsonl.gz"),
                    num_docs=3,
                    gold_position=position,
                    examples=3,
                )
            )
        )
        for position in (0, 2)
    ]
    summary = evaluate(
        MDQAConfig(
            model=model_dir, data=files, output=str(tmp_path / "out"), batch_size=2, max_new_tokens=4, no_progress=True
        )
    )

    lines = (tmp_path / "out" / "results.jsonl").read_text(encoding="utf-8").splitlines()
    results = [json.loads(line) for line in lines]
    assert len(results) == 6 and all(set(result) == RESULT_KEYS for result in results)
    assert [r["gold_position"] for r in results] == [0, 0, 0, 2, 2, 2]
    assert all(r["best_subspan_em"] in (0.0, 1.0) for r in results)

    written = json.loads((tmp_path / "out" / "summary.json").read_text(encoding="utf-8"))
    by_position = summary["accuracy_by_gold_position"]
    assert written == {
        **summary,
        "accuracy_by_gold_position": {str(k): v for k, v in by_position.items()},
        "examples_by_gold_position": {"0": 3, "2": 3},
    }
    assert summary["num_examples"] == 6 and summary["skipped_too_long"] == 0
    assert summary["files"] == files and set(summary["by_file"]) == set(files)
    assert set(summary["accuracy_by_gold_position"]) == {0, 2}
    accuracies = [
        summary["accuracy"],
        *summary["accuracy_by_gold_position"].values(),
        *(entry["accuracy"] for entry in summary["by_file"].values()),
    ]
    assert all(0.0 <= accuracy <= 1.0 for accuracy in accuracies)
    assert summary["config"] == {"batch_size": 2, "max_new_tokens": 4, "limit": None, "dtype": "float32"}
    assert (tmp_path / "out" / "mdqa.png").stat().st_size > 0


def test_run_skips_prompts_longer_than_the_model_and_honours_limit(tmp_path, gpt2_tokenizer):
    model_dir = save_tiny_llama(tmp_path / "model", gpt2_tokenizer, max_positions=400)
    short = str(
        make_mdqa(MakeMDQAConfig(output=str(tmp_path / "one_doc.jsonl.gz"), num_docs=1, examples=3))
    )  # ≈ 180 tokens
    long = str(
        make_mdqa(MakeMDQAConfig(output=str(tmp_path / "five_docs.jsonl.gz"), num_docs=5, gold_position=4, examples=3))
    )  # ≈ 800
    summary = evaluate(
        MDQAConfig(
            model=model_dir,
            data=[short, long],
            output=str(tmp_path / "out"),
            max_new_tokens=2,
            limit=2,
            no_progress=True,
        )
    )
    assert summary["num_examples"] == 2 and summary["skipped_too_long"] == 2
    assert summary["by_file"][long] == {"accuracy": None, "num_examples": 0, "skipped_too_long": 2}
    assert summary["by_file"][short]["num_examples"] == 2
    assert set(summary["accuracy_by_gold_position"]) == {0}
    assert len((tmp_path / "out" / "results.jsonl").read_text().splitlines()) == 2


def test_run_rejects_bad_arguments_before_loading_a_model(tmp_path):
    with pytest.raises(UserError, match="no data files"):
        evaluate(MDQAConfig(model="no-such-model", data=[], output=str(tmp_path / "out")))
    with pytest.raises(UserError, match="limit must be at least 1"):
        evaluate(MDQAConfig(model="no-such-model", data=["x.jsonl.gz"], output=str(tmp_path / "out"), limit=0))
    with pytest.raises(UserError, match="absent.jsonl.gz: no such file"):
        evaluate(
            MDQAConfig(model="no-such-model", data=[str(tmp_path / "absent.jsonl.gz")], output=str(tmp_path / "out"))
        )


def test_the_command_writes_no_library_noise_or_bars_into_a_redirected_log(tmp_path, gpt2_tokenizer, capfd):
    from meap.cli import main

    gpt2_tokenizer.model_max_length = 256  # the tokenizer's own limit is below the prompts and the model's
    model_dir = save_tiny_llama(tmp_path / "model", gpt2_tokenizer, max_positions=2048)
    data = str(
        make_mdqa(MakeMDQAConfig(output=str(tmp_path / "five_docs.jsonl.gz"), num_docs=5, examples=2))
    )  # ≈ 800 tokens
    capfd.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        main(
            ["eval", "mdqa", "--model", model_dir, "--data", data, "-o", str(tmp_path / "out"), "--max-new-tokens", "2"]
        )
    assert exit_info.value.code == 0
    captured = capfd.readouterr()
    assert captured.out.startswith("mdqa: best-subspan EM")
    assert captured.err == ""  # no "Token indices sequence length ...", no progress bar (stderr is no terminal)
