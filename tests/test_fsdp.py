"""Sharded training (FSDP2) under torchrun on CPU processes (gloo), through accelerate's own FSDP2 path: the
same run as one process with the same global batch, resumed after a SIGKILL, its final/ whole."""

import pytest
import torch
from transformers import AutoModelForCausalLM

from meap.rundir import RunDir, checkpoint_dirs
from meap.train import pretrain, sft
from meap.train.checkpoints import checkpoint_damage

import sft_cases
from conftest import (
    NAN_AT_STEP_4,
    assert_metrics_close,
    config_flags,
    error_lines,
    read_metrics,
    sigkill,
    tiny_config,
    torchrun,
)

# Two processes of 2 sequences make the global batch of one process of 4 (as tests/test_distributed.py).
SHAPE = dict(max_steps=6, save_every=3, eval_every=3, eval_batches=2, log_every=1)


def single_and_sharded(prepared, tmp_path, **overrides):
    single = pretrain(
        tiny_config(prepared, tmp_path / "single", micro_batch_size=4, **SHAPE, **overrides), progress=False
    )
    sharded = tmp_path / "fsdp"
    result = torchrun(tiny_config(prepared, sharded, micro_batch_size=2, fsdp=True, **SHAPE, **overrides), 2)
    assert result.returncode == 0, result.stderr[-3000:]
    return single, sharded, result


@pytest.mark.parametrize("objective, loss_chunk_size", [("ntp", 0), ("meap", 0), ("ntp", 16), ("meap", 16)])
def test_fsdp_on_two_processes_matches_one_process(prepared, tmp_path, objective, loss_chunk_size):
    single, sharded, result = single_and_sharded(
        prepared, tmp_path, objective=objective, loss_chunk_size=loss_chunk_size
    )

    assert_metrics_close(read_metrics(sharded), read_metrics(single), rel=1e-4)
    assert result.stdout.count("done:") == 1
    assert [c.name for c in checkpoint_dirs(sharded / "checkpoints")] == ["step-3", "step-6"]
    assert all(checkpoint_damage(c) is None for c in checkpoint_dirs(sharded / "checkpoints"))
    assert all(any(c.glob("pytorch_model_fsdp*")) for c in checkpoint_dirs(sharded / "checkpoints"))  # sharded
    # final/ is one whole model, loaded on one process, with the single-process run's weights
    model = AutoModelForCausalLM.from_pretrained(RunDir(sharded).final_dir)
    reference = AutoModelForCausalLM.from_pretrained(RunDir(single).final_dir).state_dict()
    for name, tensor in model.state_dict().items():
        assert type(tensor) is torch.Tensor and tensor.shape == reference[name].shape, name
        torch.testing.assert_close(tensor, reference[name], rtol=1e-3, atol=1e-5, msg=name)


def test_a_killed_fsdp_run_resumes_to_the_uninterrupted_losses(prepared, tmp_path):
    full = pretrain(tiny_config(prepared, tmp_path / "full", micro_batch_size=4, **SHAPE), progress=False)
    run = tmp_path / "fsdp"
    config = tiny_config(prepared, run, micro_batch_size=2, fsdp=True, **SHAPE)
    sigkill(
        ["pretrain", "--no-progress", *config_flags(config)],
        run / "checkpoints",
        "during a step",
        first_checkpoint="step-3",
        processes=2,
    )

    result = torchrun(config, 2, "--resume")
    assert result.returncode == 0, result.stderr[-3000:]
    assert_metrics_close(read_metrics(run), read_metrics(full), rel=1e-4)


def test_a_nan_on_one_rank_stops_the_sharded_run_before_the_optimizer_step(prepared, tmp_path):
    run = tmp_path / "fsdp"
    result = torchrun(
        tiny_config(prepared, run, micro_batch_size=2, fsdp=True, **SHAPE), 2, fault=NAN_AT_STEP_4, timeout=300
    )

    assert result.returncode != 0
    [line] = error_lines(result.stderr)
    assert line.startswith("meap: error: step 4: the training loss is nan (not finite) on rank 1;"), line
    assert [c.name for c in checkpoint_dirs(run / "checkpoints")] == ["step-3"] and not (run / "final").exists()
    assert max(m["step"] for m in read_metrics(run)) == 3


def test_fsdp_fine_tuning_on_two_processes_matches_one_process(tiny_model_dir, tmp_path):
    data = sft_cases.write(tmp_path / "alpaca.jsonl", [sft_cases.alpaca(i) for i in range(20)])
    shape = dict(max_steps=4, save_every=2, eval_every=0)
    single = sft(
        sft_cases.config(tiny_model_dir, [data], tmp_path / "single", micro_batch_size=2, **shape), progress=False
    )
    sharded = tmp_path / "fsdp"
    config = sft_cases.config(tiny_model_dir, [data], sharded, micro_batch_size=1, fsdp=True, **shape)
    result = torchrun(config, 2, command="sft")
    assert result.returncode == 0, result.stderr[-3000:]

    assert_metrics_close(read_metrics(sharded), read_metrics(single), rel=1e-4)
    assert all(any(c.glob("pytorch_model_fsdp*")) for c in checkpoint_dirs(sharded / "checkpoints"))
    AutoModelForCausalLM.from_pretrained(RunDir(sharded).final_dir)
