"""The benchmarks must stay runnable (CPU smoke shapes here): the GPU throughput loop and its loss-curve check,
the retrieval search and the GPU suite."""

import json
import os
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def test_gpu_throughput_runs_every_variant_and_meap_ntp_follows_the_plain_loop(prepared, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            str(BENCHMARKS / "gpu_throughput.py"),
            "--preset",
            "tiny",
            "--seq-len",
            "64",
            "--micro-batch",
            "2",
            "--steps",
            "4",
            "--warmup",
            "1",
            "--data",
            str(prepared),
            "--no-compile",
            "--output",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "gpu-throughput-tiny-64.json").read_text())
    names = [r["variant"] for r in summary["results"]]
    assert names == ["plain HF, eager", "meap pretrain, ntp", "meap pretrain, meap"]
    assert all(r["tokens_per_s"] > 0 and len(r["losses"]) == 4 for r in summary["results"])
    # Same init, same batches, same optimizer: meap's NTP training is the plain loop (float32 on CPU).
    assert summary["ntp_vs_plain_eager_loss_max_rel_diff_first_5"] < 1e-5
    losses = {r["variant"]: r["losses"] for r in summary["results"]}
    assert losses["meap pretrain, meap"][0] != losses["meap pretrain, ntp"][0]  # masked inputs: another loss
    if summary["peak_flops"] is None:  # no peak-FLOP/s table entry for a CPU: no MFU, never a made-up one
        assert all(r["mfu"] is None for r in summary["results"])


def test_retrieval_search_runs_both_modes():
    """The search behind BENCHMARKS.md's retrieval table must stay runnable (a few steps of each mode)."""
    script = str(BENCHMARKS / "retrieval_search.py")
    rows = subprocess.run(
        [
            sys.executable,
            script,
            "--documents",
            "300",
            "--vocab",
            "400",
            "--merge-digits",
            "--quote-answers",
            "--drills",
            "0.5",
            "--warmup-drill-steps",
            "2",
            "--warmup-batch",
            "2",
            "--document-attention",
            "--mask-ratio",
            "0.15",
            "--steps",
            "2",
            "--eval-every",
            "2",
            "--context-words",
            "0",
            "20",
            "--lengths",
            "128",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rows.returncode == 0, rows.stderr[-3000:]
    last = json.loads(rows.stdout.strip().splitlines()[-1])
    assert last["step"] == 4 and set(last["niah"]) == {"128"} and 0 <= last["drill_copy"] <= 1
    probe = subprocess.run(
        [sys.executable, script, "--induction", "--steps", "4", "--eval-every", "2", "--seq-len", "64", "--batch", "4"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert json.loads(probe.stdout.strip().splitlines()[-1])["step"] == 4


def test_gpu_suite_cpu_smoke_writes_what_the_gpu_run_writes(tmp_path):
    """Every part of benchmarks/gpu_suite.sh at toy size: the files a GPU run returns, each part ok."""
    out = tmp_path / "out"
    result = subprocess.run(
        ["bash", str(BENCHMARKS / "gpu_suite.sh"), "--cpu-smoke"],
        capture_output=True,
        text=True,
        timeout=900,
        env={**os.environ, "OUT": str(out), "PYTHON": sys.executable},
    )
    assert result.returncode == 0, result.stdout[-3000:] + (out / "suite.log").read_text()[-3000:]
    parts = json.loads((out / "parts.json").read_text())["parts"]
    assert [p["part"] for p in parts] == ["environment", "test_gpu", "throughput", "fsdp", "niah"]
    assert all(p["status"] == "ok" for p in parts)
    assert sorted(path.name for path in out.iterdir()) == [
        "env.txt",
        "fsdp-smoke.json",
        "gpu-throughput-tiny-64.json",
        "niah-batching-float32.json",
        "parts.json",
        "suite.log",
    ]
    fsdp = json.loads((out / "fsdp-smoke.json").read_text())
    # the resumed half was trained again, not read back: its records were removed before --resume
    assert fsdp["ok"] and fsdp["sharded"] and fsdp["resume_max_rel_diff"] == 0.0
    assert len(fsdp["resumed_losses"]) == fsdp["steps"]


def test_gpu_suite_refuses_an_unknown_argument():
    result = subprocess.run(["bash", str(BENCHMARKS / "gpu_suite.sh"), "--gpu"], capture_output=True, text=True)
    assert result.returncode == 2 and result.stderr.count("\n") == 1 and "--cpu-smoke" in result.stderr
