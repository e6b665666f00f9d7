"""The GPU throughput benchmark must run (CPU smoke shape here) and its loss-curve check must hold."""

import json
import subprocess
import sys
from pathlib import Path

BENCHMARKS = Path(__file__).parent.parent / "benchmarks"


def test_gpu_throughput_runs_every_variant_and_meap_ntp_follows_the_plain_loop(prepared, tmp_path):
    result = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_throughput.py"), "--preset", "tiny",
                             "--seq-len", "64", "--micro-batch", "2", "--steps", "4", "--warmup", "1",
                             "--data", str(prepared), "--no-compile", "--output", str(tmp_path)],
                            capture_output=True, text=True, timeout=600)
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
    rows = subprocess.run([sys.executable, script, "--documents", "300", "--vocab", "400", "--merge-digits",
                           "--quote-answers", "--drills", "0.5", "--warmup-drill-steps", "2", "--warmup-batch", "2",
                           "--document-attention", "--mask-ratio", "0.15", "--steps", "2", "--eval-every", "2",
                           "--context-words", "0", "20", "--lengths", "128"],
                          capture_output=True, text=True, timeout=600)
    assert rows.returncode == 0, rows.stderr[-3000:]
    last = json.loads(rows.stdout.strip().splitlines()[-1])
    assert last["step"] == 4 and set(last["niah"]) == {"128"} and 0 <= last["drill_copy"] <= 1
    probe = subprocess.run([sys.executable, script, "--induction", "--steps", "4", "--eval-every", "2",
                            "--seq-len", "64", "--batch", "4"], capture_output=True, text=True, timeout=600)
    assert probe.returncode == 0, probe.stderr[-3000:]
    assert json.loads(probe.stdout.strip().splitlines()[-1])["step"] == 4
