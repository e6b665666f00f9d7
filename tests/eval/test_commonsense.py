"""The paper's commonsense tasks through lm-eval, offline: local copies in each dataset's own fields run through
lm-eval's own task definitions; absent data is one line naming the dataset."""

import json

import pytest

from meap.cli import main
from meap.eval.commonsense import GROUP, TASKS, TASKS_DIR, CommonsenseConfig, evaluate

# Two records per task in the fields of its Hugging Face dataset, in the split lm-eval scores
ARC = {"id": "q", "question": "What do plants need to grow?", "answerKey": "B"}
ARC["choices"] = {"text": ["darkness", "sunlight", "salt"], "label": ["A", "B", "C"]}
LOCAL = {
    ("arc_challenge", "test"): [ARC, {**ARC, "id": "r", "answerKey": "A"}],
    ("arc_easy", "test"): [ARC, {**ARC, "id": "s", "answerKey": "C"}],
    ("boolq", "validation"): [
        {"question": "is water wet", "passage": "Water is a liquid.", "idx": 0, "label": 1},
        {"question": "is fire cold", "passage": "Fire is hot.", "idx": 1, "label": 0},
    ],
    ("piqa", "validation"): [
        {"goal": "To open a jar,", "sol1": "twist the lid.", "sol2": "paint the lid.", "label": 0},
        {"goal": "To dry hair,", "sol1": "wet it.", "sol2": "use a towel.", "label": 1},
    ],
    ("hellaswag", "validation"): [
        {
            "ind": i,
            "activity_label": "Cooking",
            "ctx_a": "A man cracks an egg.",
            "ctx_b": "he",
            "ctx": "",
            "endings": ["fries it.", "sings.", "flies away.", "reads."],
            "source_id": "x",
            "split": "val",
            "split_type": "indomain",
            "label": str(i),
        }  # fmt: skip
        for i in range(2)
    ],
    ("winogrande", "validation"): [
        {
            "sentence": "The cup fell off the table because _ was tilted.",
            "option1": "the cup",
            "option2": "the table",
            "answer": "2",
        },
        {"sentence": "Anna gave Beth a gift because _ was kind.", "option1": "Anna", "option2": "Beth", "answer": "1"},
    ],  # fmt: skip
    ("openbookqa", "test"): [
        {
            "id": "o",
            "question_stem": "The sun is a",
            "answerKey": "A",
            "choices": {"text": ["star", "planet", "moon", "comet"], "label": ["A", "B", "C", "D"]},
        }
    ]
    * 2,  # fmt: skip
}


@pytest.fixture
def data_dir(tmp_path):
    for (task, split), records in LOCAL.items():
        folder = tmp_path / "data" / task
        folder.mkdir(parents=True)
        (folder / f"{split}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    return tmp_path / "data"


def test_the_group_lists_the_papers_seven_tasks():
    import yaml

    group = yaml.safe_load((TASKS_DIR / f"{GROUP}.yaml").read_text())
    assert group["group"] == GROUP and tuple(group["task"]) == TASKS
    assert sorted(TASKS) == sorted({task for task, _ in LOCAL})


def test_local_copies_run_through_lm_evals_own_definitions(tiny_model_dir, data_dir, tmp_path, capsys):
    output = tmp_path / "out"
    with pytest.raises(SystemExit) as exit_info:
        main(["eval", "commonsense", "--model", str(tiny_model_dir), "--data-dir", str(data_dir), "-o", str(output)])
    assert exit_info.value.code == 0
    summary = json.loads((output / "results.json").read_text())
    assert summary["kind"] == "commonsense" and list(summary["results"]) == list(TASKS)
    for task, metrics in summary["results"].items():
        assert metrics["samples"] == 2 and metrics["acc"] in (0.0, 0.5, 1.0), task
        # acc_norm where lm-eval defines it: not for BoolQ and WinoGrande
        assert ("acc_norm" in metrics) == (task not in ("boolq", "winogrande")), task
    accuracies = [summary["results"][task]["acc"] for task in TASKS]
    assert summary["average_acc"] == pytest.approx(sum(accuracies) / 7)
    assert "commonsense: acc (/acc_norm) arc_challenge" in capsys.readouterr().out


def test_a_task_without_its_split_names_the_file_expected(tiny_model_dir, data_dir, tmp_path):
    (data_dir / "piqa" / "validation.jsonl").rename(data_dir / "piqa" / "train.jsonl")
    from meap.errors import UserError

    with pytest.raises(UserError, match=r"piqa: no validation split of piqa \(expected .*/piqa/validation.jsonl"):
        evaluate(CommonsenseConfig(model=str(tiny_model_dir), output=str(tmp_path / "o"), data_dir=str(data_dir)))
    assert not (tmp_path / "o").exists()
