"""Loading never runs code from files: pickles only as weights_only, no remote code, weights as safetensors."""

import re
import shutil
from pathlib import Path

import torch

from meap.train import pretrain

from conftest import tiny_config

SOURCES = sorted((Path(__file__).parents[1] / "src" / "meap").rglob("*.py"))


def calls(name: str) -> list[tuple[Path, str]]:
    """Every call of ``name`` in the package source, with its arguments (up to the closing parenthesis)."""
    found = []
    for path in SOURCES:
        text = path.read_text(encoding="utf-8")
        for match in re.finditer(re.escape(name) + r"\(", text):
            depth, end = 1, match.end()
            while depth:
                depth += {"(": 1, ")": -1}.get(text[end], 0)
                end += 1
            found.append((path, text[match.start() : end]))
    return found


def test_pickles_are_loaded_as_weights_only_and_remote_code_stays_off():
    # meap unpickles nothing itself; the libraries' loads on resume are checked below
    assert calls("torch.load") == [] and calls("pickle.load") == [] and calls("pickle.loads") == []
    assert not any("trust_remote_code=True" in path.read_text() for path in SOURCES)
    local_loads = [
        (path, call) for path, call in calls(".from_pretrained") if "gguf_file" not in call
    ]  # the packaged GGUF conversion reads a pinned package file
    assert local_loads and all("trust_remote_code=False" in call for _, call in local_loads), local_loads


def test_resume_loads_every_pickle_as_weights_only(prepared, tmp_path, monkeypatch):
    """The checkpoint's optimizer, scheduler and RNG states are pickles: the Trainer must load each with
    weights_only=True (a torch.load spy records every call while a run resumes)."""
    run = tmp_path / "run"
    pretrain(tiny_config(prepared, run, max_steps=2, save_every=1, eval_every=0), progress=False)
    shutil.rmtree(run / "final")
    shutil.rmtree(run / "checkpoints" / "step-2")
    loads = []
    real_load = torch.load

    def spy(*args, **kwargs):
        loads.append((str(args[0]) if args else "", kwargs.get("weights_only")))
        return real_load(*args, **kwargs)

    monkeypatch.setattr(torch, "load", spy)
    pretrain(tiny_config(prepared, run, max_steps=2, save_every=1, eval_every=0), resume=True, progress=False)

    assert {Path(path).name for path, _ in loads} >= {"optimizer.pt", "scheduler.pt", "rng_state.pth"}, loads
    assert all(weights_only is True for _, weights_only in loads), loads


def test_runs_write_weights_as_safetensors_only(prepared, tmp_path):
    run = pretrain(tiny_config(prepared, tmp_path / "run", max_steps=2, save_every=2, eval_every=0), progress=False)
    for directory in (run / "final", run / "checkpoints" / "step-2"):
        assert (directory / "model.safetensors").is_file()
        assert not list(directory.glob("pytorch_model*.bin")) and not list(directory.glob("*.pth.tar"))
