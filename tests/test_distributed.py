"""Data-parallel training under torchrun (CPU, gloo): the same run as one process with the same global batch."""

import shutil

import pytest

from meap.rundir import checkpoint_dirs
from meap.train import pretrain
from meap.train.checkpoints import checkpoint_damage

from conftest import NAN_AT_STEP_4, assert_metrics_close, error_lines, read_metrics, tiny_config, torchrun

# Two processes of 2 sequences make the global batch of one process of 4; validation reads 2 micro-batches of
# 2 per process (8 sequences), as one process reading 2 of 4.
SHAPE = dict(max_steps=6, save_every=3, eval_every=3, eval_batches=2, log_every=1)


@pytest.mark.parametrize("objective", ["ntp", "meap"])
def test_two_processes_match_one_with_the_same_global_batch(prepared, tmp_path, objective):
    single = pretrain(
        tiny_config(prepared, tmp_path / "single", objective=objective, micro_batch_size=4, **SHAPE), progress=False
    )
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


def test_a_nan_on_one_rank_stops_every_rank_before_the_optimizer_step(prepared, tmp_path):
    run = tmp_path / "ddp"
    result = torchrun(tiny_config(prepared, run, micro_batch_size=2, **SHAPE), 2, fault=NAN_AT_STEP_4, timeout=300)

    assert result.returncode != 0
    [line] = error_lines(result.stderr)  # said once, by rank 0, naming the rank that saw it
    assert line.startswith("meap: error: step 4: the training loss is nan (not finite) on rank 1;"), line
    assert "step-3" in line and "Traceback" not in result.stderr.split("meap: error:")[0]
    assert [c.name for c in checkpoint_dirs(run / "checkpoints")] == ["step-3"] and not (run / "final").exists()
    assert max(m["step"] for m in read_metrics(run)) == 3


def test_on_nan_skip_skips_the_step_on_every_rank(prepared, tmp_path):
    run = tmp_path / "ddp"
    result = torchrun(
        tiny_config(prepared, run, micro_batch_size=2, on_nan="skip", **SHAPE), 2, fault=NAN_AT_STEP_4, timeout=300
    )

    assert result.returncode == 0, result.stderr[-3000:]
    assert (
        result.stderr.count("step 4: the training loss is nan (not finite) on rank 1; this optimizer step is skipped")
        == 1
    )
    records = {r["step"]: r for r in read_metrics(run)}
    assert sorted(records) == list(range(1, 7)) and records[4]["skipped_steps"] == [4]
    assert all(checkpoint_damage(c) is None for c in checkpoint_dirs(run / "checkpoints"))


def test_an_error_on_one_rank_stops_the_job_and_names_the_rank(prepared, tmp_path):
    fault = """
        import meap.train.trainer
        from meap.errors import UserError
        real_step, calls = meap.train.trainer.MeapTrainer.training_step, []

        def training_step(self, *args, **kwargs):
            calls.append(1)
            if len(calls) == 2:
                raise UserError("/data/shard-7.bin: unreadable (simulated)")
            return real_step(self, *args, **kwargs)

        meap.train.trainer.MeapTrainer.training_step = training_step
    """
    run = tmp_path / "ddp"
    # Rank 0 waits in the step's all-reduce for a peer that is gone: torchrun must end it, not the 30-min timeout.
    result = torchrun(tiny_config(prepared, run, micro_batch_size=2, **SHAPE), 2, fault=fault, timeout=180)

    assert result.returncode != 0
    assert error_lines(result.stderr) == ["meap: error: rank 1: /data/shard-7.bin: unreadable (simulated)"]
    assert not (run / "final").exists()
