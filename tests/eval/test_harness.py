"""lm-evaluation-harness runs, offline: a local multiple-choice task end to end, and the one-line errors
for an unknown task and for a hub task whose data cannot be downloaded."""

import json
import time
from pathlib import Path

import pytest
import yaml

from meap.errors import UserError
from meap.eval import harness
from meap.eval.harness import HarnessConfig
from meap.eval.results import summary_file

FIXTURES = Path(__file__).parent / "fixtures" / "harness"
TOY_TASK = "meap_toy_qa"
TOY_QUESTIONS = len((FIXTURES / "toy_qa.jsonl").read_text(encoding="utf-8").splitlines())


@pytest.fixture(scope="module")
def toy_task_dir(tmp_path_factory) -> Path:
    """The fixture task, its data_files made absolute (`datasets` reads relative ones from the working dir).

    Module-scoped so both runs share one include path, hence one (cached) lm-eval task index.
    """
    definition = yaml.safe_load((FIXTURES / "toy_qa.yaml").read_text(encoding="utf-8"))
    data_files = definition["dataset_kwargs"]["data_files"]
    for split, name in data_files.items():
        data_files[split] = str(FIXTURES / name)
    task_dir = tmp_path_factory.mktemp("tasks")
    (task_dir / "toy_qa.yaml").write_text(yaml.safe_dump(definition), encoding="utf-8")
    return task_dir


@pytest.fixture(autouse=True)
def private_datasets_cache(tmp_path, monkeypatch):
    """Keep the datasets built from the fixture out of the user's Hugging Face cache."""
    import datasets.config

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets-cache")


@pytest.mark.parametrize("limit", [None, 4])
def test_local_task_runs_offline_and_writes_results(tiny_model_dir, toy_task_dir, tmp_path, limit):
    output = tmp_path / "harness"
    summary = harness.evaluate(
        HarnessConfig(
            model=str(tiny_model_dir),
            tasks=[TOY_TASK],
            output=str(output),
            limit=limit,
            include_path=str(toy_task_dir),
            batch_size=4,
            log_samples=limit is not None,
            no_progress=True,
        )
    )

    written = json.loads((output / summary_file("harness")).read_text(encoding="utf-8"))
    logged = output / f"samples_{TOY_TASK}.jsonl"
    if limit:  # lm-eval's own per-sample records: one per document, each scored
        samples = [json.loads(line) for line in logged.read_text(encoding="utf-8").splitlines()]
        assert len(samples) == limit and all("acc" in sample and "resps" in sample for sample in samples)
    else:
        assert not logged.exists()
    assert written == summary
    assert summary["tasks"] == [TOY_TASK] and summary["model"] == str(tiny_model_dir)
    assert summary["num_fewshot"] == 0 and summary["limit"] == limit and summary["lm_eval_version"]
    metrics = summary["results"][TOY_TASK]
    for name in ("acc", "acc_norm"):
        assert 0.0 <= metrics[name] <= 1.0
        assert metrics[f"{name}_stderr"] >= 0.0
    assert metrics["samples"] == (limit or TOY_QUESTIONS)


def test_outside_a_git_repository_nothing_is_said(tiny_model_dir, toy_task_dir, tmp_path, monkeypatch, capfd):
    monkeypatch.chdir(tmp_path)  # lm-eval records the working directory's git commit
    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))  # tmp_path is not in any repository
    capfd.readouterr()
    harness.evaluate(
        HarnessConfig(
            model=str(tiny_model_dir),
            tasks=[TOY_TASK],
            output=str(tmp_path / "harness"),
            limit=2,
            include_path=str(toy_task_dir),
            batch_size=4,
            no_progress=True,
        )
    )
    assert capfd.readouterr().err == ""  # git's "fatal: not a git repository" above all; no bar either


def test_unknown_task_suggests_close_names(tmp_path):
    # Task names are checked before the model is loaded, so no model is needed.
    with pytest.raises(UserError, match="unknown lm-eval task `arc_eazy`: did you mean arc_easy"):
        harness.evaluate(
            HarnessConfig(model=str(tmp_path / "unused-model"), tasks=["arc_eazy"], output=str(tmp_path / "out"))
        )


def test_hub_task_without_network_fails_fast_on_one_line(tmp_path):
    started = time.monotonic()
    with pytest.raises(UserError) as raised:
        harness.evaluate(
            HarnessConfig(model=str(tmp_path / "unused-model"), tasks=["arc_easy"], output=str(tmp_path / "out"))
        )
    message = str(raised.value)
    assert "\n" not in message
    assert "`arc_easy`" in message and "not available offline" in message and "--include-path" in message
    assert time.monotonic() - started < 30  # no download retries
    assert not (tmp_path / "out").exists()
