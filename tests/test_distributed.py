"""Data-parallel training under torchrun (CPU, gloo): the same run as one process with the same global batch."""

import os
import shutil
import subprocess
import sys

import pytest

from meap.train import checkpoint_damage, checkpoint_dirs, pretrain

from test_train import assert_metrics_close, read_metrics, tiny_config

# Two processes of 2 sequences make the global batch of one process of 4; validation reads 2 micro-batches of
# 2 per process (8 sequences), as one process reading 2 of 4.
SHAPE = dict(max_steps=6, save_every=3, eval_every=3, eval_batches=2, log_every=1)


def torchrun(config, world_size: int, *extra: str) -> subprocess.CompletedProcess:
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in vars(config).items()]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                           f"--nproc_per_node={world_size}", "-m", "meap.cli", "pretrain", "--no-progress", *flags,
                           *extra], capture_output=True, text=True, timeout=600, env=env)


@pytest.mark.parametrize("objective", ["ntp", "meap"])
def test_two_processes_match_one_with_the_same_global_batch(prepared, tmp_path, objective):
    single = pretrain(tiny_config(prepared, tmp_path / "single", objective=objective, micro_batch_size=4, **SHAPE),
                      progress=False)
    result = torchrun(tiny_config(prepared, tmp_path / "ddp", objective=objective, micro_batch_size=2, **SHAPE), 2)
    assert result.returncode == 0, result.stderr[-3000:]

    assert_metrics_close(read_metrics(tmp_path / "ddp"), read_metrics(single), rel=1e-4)
    # Written once, by the main process: one line per step, one final model, intact checkpoints.
    assert result.stdout.count("done:") == 1
    assert [c.name for c in checkpoint_dirs(tmp_path / "ddp" / "checkpoints")] == ["step-3", "step-6"]
    assert all(checkpoint_damage(c) is None for c in checkpoint_dirs(tmp_path / "ddp" / "checkpoints"))


def test_a_two_process_run_resumes_as_one_process(prepared, tmp_path):
    full = pretrain(tiny_config(prepared, tmp_path / "full", micro_batch_size=4, **SHAPE), progress=False)
    run = tmp_path / "ddp"
    result = torchrun(tiny_config(prepared, run, micro_batch_size=2, **SHAPE), 2)
    assert result.returncode == 0, result.stderr[-3000:]
    shutil.rmtree(run / "final")
    shutil.rmtree(run / "checkpoints" / "step-6")  # as if the two-process run had stopped after step 3

    with pytest.raises(Exception, match="samples per step"):  # the layout must keep the global batch
        pretrain(tiny_config(prepared, run, micro_batch_size=2, **SHAPE), resume=True, progress=False)
    pretrain(tiny_config(prepared, run, micro_batch_size=4, **SHAPE), resume=True, progress=False)

    assert_metrics_close(read_metrics(run), read_metrics(full), rel=1e-4)
