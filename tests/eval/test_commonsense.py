"""The paper's commonsense tasks through lm-eval, offline: local copies in each dataset's own fields run through
lm-eval's own task definitions; absent data is one line naming the dataset."""

import json
import shutil
from pathlib import Path

import pytest

from meap.cli import main
from meap.eval.commonsense import GROUP, TASKS, TASKS_DIR, CommonsenseConfig, evaluate

# Two records per task in the fields of its Hugging Face dataset, in the split lm-eval scores
LOCAL = Path(__file__).parent / "fixtures" / "commonsense"


@pytest.fixture
def data_dir(tmp_path):
    return shutil.copytree(LOCAL, tmp_path / "data")


def test_the_group_lists_the_papers_seven_tasks():
    import yaml

    group = yaml.safe_load((TASKS_DIR / f"{GROUP}.yaml").read_text())
    assert group["group"] == GROUP and tuple(group["task"]) == TASKS
    assert sorted(TASKS) == sorted(path.name for path in LOCAL.iterdir())


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
