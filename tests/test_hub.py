"""Hub ids (`org/name`) wherever a model or tokenizer is named, resolved through a real Hugging Face cache
layout that the test builds from a model it makes, offline (HF_HUB_OFFLINE=1), as `meap` processes."""

import json
import os
import shutil
import subprocess
import sys

import pytest

REVISION = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def hub_cache(tiny_model_dir, tmp_path):
    """``HF_HUB_CACHE`` holding ``meap-test/tiny-llama`` as the hub lays it out: snapshots/<rev>/ and refs/main."""
    cache = tmp_path / "hub"
    repo = cache / "models--meap-test--tiny-llama"
    shutil.copytree(tiny_model_dir, repo / "snapshots" / REVISION)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(REVISION)
    return cache


def meap(*argv, cache, cwd):
    env = {**os.environ, "HF_HUB_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    return subprocess.run(
        [sys.executable, "-m", "meap", *argv], capture_output=True, text=True, env=env, cwd=cwd, timeout=600
    )


def test_eval_and_sft_take_a_cached_hub_id_offline(hub_cache, tmp_path):
    niah = meap(
        "eval",
        "niah",
        "--model",
        "meap-test/tiny-llama",
        "--lengths",
        "200",
        "--depths",
        "0,100",
        "--max-new-tokens",
        "4",
        "--haystack",
        "builtin-prose",
        "-o",
        "niah",
        "--no-progress",
        cache=hub_cache,
        cwd=tmp_path,
    )
    assert niah.returncode == 0, niah.stderr
    summary = json.loads((tmp_path / "niah" / "summary.json").read_text())
    assert len(summary["cells"]) == 2 and (tmp_path / "niah" / "heatmap.png").is_file()

    (tmp_path / "sft.jsonl").write_text(json.dumps({"instruction": "Say the words.", "output": "one two " * 20}) + "\n")
    sft = meap(
        "sft",
        "--model",
        "meap-test/tiny-llama",
        "--data",
        "sft.jsonl",
        "--output",
        "run",
        "--max-length",
        "256",
        "--max-steps",
        "2",
        "--micro-batch-size",
        "1",
        "--val-fraction",
        "0",
        "--warmup-steps",
        "1",
        "--min-answer-tokens",
        "4",
        "--no-progress",
        cache=hub_cache,
        cwd=tmp_path,
    )
    assert sft.returncode == 0, sft.stderr
    assert (tmp_path / "run" / "final" / "config.json").is_file()


def test_prepare_takes_a_hub_tokenizer_and_pretrain_the_hub_model(hub_cache, tmp_path):
    (tmp_path / "text.txt").write_text("The quick brown fox jumps over the lazy dog. " * 300)
    prepared = meap(
        "prepare",
        "text.txt",
        "--tokenizer",
        "meap-test/tiny-llama",
        "-o",
        "data",
        "--num-proc",
        "1",
        cache=hub_cache,
        cwd=tmp_path,
    )
    assert prepared.returncode == 0, prepared.stderr
    run = meap(
        "pretrain",
        "--model",
        "meap-test/tiny-llama",
        "--data",
        "data",
        "--output",
        "run",
        "--seq-len",
        "32",
        "--micro-batch-size",
        "2",
        "--max-steps",
        "2",
        "--warmup-steps",
        "1",
        "--no-progress",
        cache=hub_cache,
        cwd=tmp_path,
    )
    assert run.returncode == 0, run.stderr


def test_an_uncached_hub_id_is_one_line(hub_cache, tmp_path):
    result = meap("eval", "niah", "--model", "meap-test/absent", "-o", "out", cache=hub_cache, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"meap: error: meap-test/absent: no such local directory, and not in the Hugging Face cache {hub_cache} "
        "(HF_HUB_OFFLINE is set); download it there first, or give a local directory"
    )
    assert not (tmp_path / "out").exists()
