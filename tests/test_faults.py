"""Faults lose nothing: SIGKILL at any moment, damaged checkpoints, a full disk and a non-finite loss."""

import errno
import functools
import shutil
import signal
import subprocess
import sys
import time

import pytest
import torch
from safetensors.torch import load_file
from transformers import LlamaForCausalLM

from meap.errors import UserError
from meap.rundir import checkpoint_dirs, without_timing
from meap.train import pretrain
from meap.train.checkpoints import MANIFEST_FILE, checkpoint_damage
from meap.train.trainer import NonFiniteLoss

from conftest import config_flags, read_metrics, sigkill, tiny_config

STEPS = dict(max_steps=10, save_every=2, eval_every=5)


def same_weights(a, b) -> bool:
    first, second = load_file(a / "final" / "model.safetensors"), load_file(b / "final" / "model.safetensors")
    return first.keys() == second.keys() and all(torch.equal(first[k], second[k]) for k in first)


@pytest.fixture(scope="module")
def uninterrupted(prepared, tmp_path_factory):
    root = tmp_path_factory.mktemp("uninterrupted")
    return {
        objective: pretrain(tiny_config(prepared, root / objective, objective=objective, **STEPS), progress=False)
        for objective in ("ntp", "meap")
    }


@pytest.mark.parametrize("objective", ["ntp", "meap"])
@pytest.mark.parametrize("moment", ["during a step", "during a checkpoint write"])
def test_sigkill_then_resume_is_the_uninterrupted_run(prepared, tmp_path, uninterrupted, objective, moment):
    run = tmp_path / "killed"
    config = tiny_config(prepared, run, objective=objective, **STEPS)
    flags = config_flags(config)
    sigkill(["pretrain", "--no-progress", *flags], run / "checkpoints", moment, first_checkpoint="step-2")

    pretrain(config, resume=True, progress=False)

    assert without_timing(read_metrics(run)) == without_timing(read_metrics(uninterrupted[objective]))
    assert same_weights(run, uninterrupted[objective])
    assert not list((run / "checkpoints").glob(".staging-*"))


def test_damaged_checkpoints_are_detected_and_the_last_intact_one_is_used(prepared, tmp_path, uninterrupted, capsys):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted["meap"], run)
    shutil.rmtree(run / "final")  # as if the run had stopped after its last checkpoint
    newest, previous = checkpoint_dirs(run / "checkpoints")[-1], checkpoint_dirs(run / "checkpoints")[-2]
    assert checkpoint_damage(newest) is None and (newest / MANIFEST_FILE).is_file()
    weights = newest / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])  # truncated
    optimizer = previous / "optimizer.pt"
    data = bytearray(optimizer.read_bytes())
    data[len(data) // 2] ^= 0xFF  # one flipped byte: same size
    optimizer.write_bytes(bytes(data))
    assert "model.safetensors has" in checkpoint_damage(newest)
    assert checkpoint_damage(previous) == "optimizer.pt does not match its SHA-256"

    pretrain(tiny_config(prepared, run, objective="meap", **STEPS), resume=True, progress=False)

    warnings = [line for line in capsys.readouterr().err.splitlines() if "damaged" in line]
    assert len(warnings) == 2 and "step-10: damaged" in warnings[0] and "resuming from step-8" in warnings[0]
    assert "step-8: damaged" in warnings[1] and "resuming from step-6" in warnings[1]
    assert without_timing(read_metrics(run)) == without_timing(read_metrics(uninterrupted["meap"]))
    assert same_weights(run, uninterrupted["meap"])
    assert all(checkpoint_damage(c) is None for c in checkpoint_dirs(run / "checkpoints"))


def test_resume_refuses_when_every_checkpoint_is_damaged(prepared, tmp_path, uninterrupted):
    run = tmp_path / "run"
    shutil.copytree(uninterrupted["ntp"], run)
    shutil.rmtree(run / "final")
    for checkpoint in checkpoint_dirs(run / "checkpoints"):
        (checkpoint / MANIFEST_FILE).unlink()
    with pytest.raises(UserError, match="every checkpoint is damaged"):
        pretrain(tiny_config(prepared, run, objective="ntp", **STEPS), resume=True, progress=False)


def test_a_full_disk_during_a_checkpoint_keeps_the_previous_one(prepared, tmp_path, monkeypatch):
    real_save = torch.save

    def save(obj, path, *args, **kwargs):
        if ".staging-step-4" in str(path):
            raise OSError(errno.ENOSPC, "No space left on device", str(path))
        return real_save(obj, path, *args, **kwargs)

    monkeypatch.setattr(torch, "save", save)
    run = tmp_path / "run"
    with pytest.raises(UserError) as error:
        pretrain(tiny_config(prepared, run, **STEPS), progress=False)
    message = str(error.value)
    assert "no space left on device" in message and "step-4 checkpoint" in message and "step-2" in message
    assert "\n" not in message
    assert [c.name for c in checkpoint_dirs(run / "checkpoints")] == ["step-2"]
    assert checkpoint_damage(run / "checkpoints" / "step-2") is None
    assert not list((run / "checkpoints").glob(".staging-*")) and not (run / "final").exists()


def poison_training_forward(monkeypatch, call: int):
    """Make the loss of the ``call``-th training forward pass NaN (one micro-batch per step: that step)."""
    real_forward = LlamaForCausalLM.forward
    calls = {"training": 0}

    @functools.wraps(real_forward)  # the Trainer reads `labels` from the signature
    def forward(self, *args, **kwargs):
        output = real_forward(self, *args, **kwargs)
        if self.training:
            calls["training"] += 1
            if calls["training"] == call:
                output.loss = output.loss * float("nan")
        return output

    monkeypatch.setattr(LlamaForCausalLM, "forward", forward)
    return real_forward


def test_a_non_finite_loss_stops_the_run_and_names_the_step(prepared, tmp_path, uninterrupted, monkeypatch):
    real_forward = poison_training_forward(monkeypatch, 7)
    run = tmp_path / "run"
    config = tiny_config(prepared, run, objective="meap", **STEPS)
    with pytest.raises(NonFiniteLoss) as error:
        pretrain(config, progress=False)
    assert str(error.value).startswith("step 7: the training loss is nan")
    assert "step-6" in str(error.value) and "\n" not in str(error.value)
    assert [c.name for c in checkpoint_dirs(run / "checkpoints")] == ["step-2", "step-4", "step-6"]
    assert max(m["step"] for m in read_metrics(run)) <= 6 and not (run / "final").exists()

    monkeypatch.setattr(LlamaForCausalLM, "forward", real_forward)  # the fault is gone: resume finishes the run
    pretrain(config, resume=True, progress=False)
    assert without_timing(read_metrics(run)) == without_timing(read_metrics(uninterrupted["meap"]))


def test_between_logs_the_stop_comes_before_the_next_checkpoint(prepared, tmp_path, monkeypatch):
    # The optimizer skips the bad step on the device; the host looks at the next log or checkpoint.
    poison_training_forward(monkeypatch, 6)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLoss, match="^step 6: the training loss is nan"):
        pretrain(tiny_config(prepared, run, max_steps=12, log_every=5, save_every=4, eval_every=0), progress=False)
    assert [c.name for c in checkpoint_dirs(run / "checkpoints")] == ["step-4"]
    assert [m["step"] for m in read_metrics(run)] == [5]


def test_on_nan_skip_skips_that_step_and_goes_on(prepared, tmp_path, monkeypatch, capsys):
    poison_training_forward(monkeypatch, 7)
    run = pretrain(
        tiny_config(prepared, tmp_path / "run", on_nan="skip", max_steps=9, save_every=1, eval_every=0), progress=False
    )

    assert "step 7: the training loss is nan" in capsys.readouterr().err
    records = {r["step"]: r for r in read_metrics(run)}
    assert sorted(records) == list(range(1, 10)) and records[7]["skipped_steps"] == [7]
    assert not any("skipped_steps" in r for step, r in records.items() if step != 7)
    weights = {step: load_file(run / "checkpoints" / f"step-{step}" / "model.safetensors") for step in (6, 7, 8)}
    assert all(torch.equal(weights[6][k], weights[7][k]) for k in weights[6])  # the skipped step changed nothing
    assert not all(torch.equal(weights[7][k], weights[8][k]) for k in weights[7])  # the next one trained
    assert all(torch.isfinite(t).all() for t in load_file(run / "final" / "model.safetensors").values())


def _interrupted(run, flags, signals: int, after: str):
    """Start `meap pretrain FLAGS`, send ``signals`` SIGINTs once ``after`` (a path under the run) exists
    (metrics.jsonl: with 3 records)."""
    process = subprocess.Popen(
        [sys.executable, "-m", "meap.cli", "pretrain", "--no-progress", *flags],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 240
    while not (run / after).exists() or (after == "metrics.jsonl" and len(read_metrics(run)) < 3):
        assert process.poll() is None and time.monotonic() < deadline, f"the run ended before {after}"
        time.sleep(0.01)
    for _ in range(signals):
        process.send_signal(signal.SIGINT)
        time.sleep(0.05)
    _, stderr = process.communicate(timeout=120)
    return process.returncode, stderr


def test_ctrl_c_saves_where_it_stopped_and_resume_continues_as_if_uninterrupted(prepared, tmp_path):
    """The first Ctrl-C finishes the step, saves a checkpoint there (not at save_every) and stops; --resume
    goes on from that step, with the losses of a run never interrupted."""
    reference = tmp_path / "reference"
    pretrain(tiny_config(prepared, reference, max_steps=40, save_every=1000, eval_every=0), progress=False)
    run = tmp_path / "run"
    flags = config_flags(tiny_config(prepared, run, max_steps=40, save_every=1000, eval_every=0))
    code, stderr = _interrupted(run, flags, 1, "metrics.jsonl")
    assert code == 130 and "Traceback" not in stderr, stderr
    [kept] = checkpoint_dirs(run / "checkpoints")
    step = int(kept.name.removeprefix("step-"))
    assert 3 <= step < 40 and not (run / "final").exists()
    assert stderr.rstrip().splitlines()[-1] == (
        f"meap: interrupted; stopped at step {step}, saved in {kept}: continue with "
        f"`meap pretrain --output {run} --resume`"
    )
    assert "SIGINT: finishing this step, then saving a checkpoint" in stderr
    resumed = subprocess.run(
        [sys.executable, "-m", "meap.cli", "pretrain", "--no-progress", *flags, "--resume"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert resumed.returncode == 0, resumed.stderr
    assert f"resuming from step {step} " in resumed.stdout
    later = [r for r in without_timing(read_metrics(run)) if r["step"] > step]
    assert later and later == [r for r in without_timing(read_metrics(reference)) if r["step"] > step]


def test_a_second_signal_stops_at_once():
    from meap.train.stopping import StopOnSignal

    stop = StopOnSignal()
    stop._handle(signal.SIGTERM, None)  # the first: noted, the step finishes
    assert stop.received == signal.SIGTERM
    with pytest.raises(KeyboardInterrupt):  # the second: at once (run.py then names the last checkpoint kept)
        stop._handle(signal.SIGINT, None)


def test_an_ntp_run_records_the_ratio_it_trained_at_and_one_saved_otherwise_resumes(prepared, tmp_path, uninterrupted):
    """NTP is MEAP at ratio 0: its config.yaml says 0.0 (an older meap saved the unused default, and that run
    still resumes)."""
    import yaml

    saved = yaml.safe_load((uninterrupted["ntp"] / "config.yaml").read_text())
    assert saved["objective"] == "ntp" and saved["mask_ratio"] == 0.0
    assert yaml.safe_load((uninterrupted["meap"] / "config.yaml").read_text())["mask_ratio"] == 0.15
    run = tmp_path / "run"
    shutil.copytree(uninterrupted["ntp"], run)
    shutil.rmtree(run / "final")
    shutil.rmtree(sorted(checkpoint_dirs(run / "checkpoints"))[-1])
    (run / "config.yaml").write_text(yaml.safe_dump({**saved, "mask_ratio": 0.15}, sort_keys=False))
    pretrain(tiny_config(prepared, run, objective="ntp", **STEPS), resume=True, progress=False)
    assert without_timing(read_metrics(run)) == without_timing(read_metrics(uninterrupted["ntp"]))
    assert yaml.safe_load((run / "config.yaml").read_text())["mask_ratio"] == 0.0
