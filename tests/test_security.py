"""Loading never runs code from files: pickles only as weights_only, no remote code, weights as safetensors."""

import re
from pathlib import Path

from conftest import tiny_config

from meap.train import pretrain

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
            found.append((path, text[match.start():end]))
    return found


def test_pickles_are_loaded_as_weights_only_and_remote_code_stays_off():
    assert all("weights_only=True" in call for _, call in calls("torch.load"))
    assert not any("trust_remote_code=True" in path.read_text() for path in SOURCES)
    local_loads = [(path, call) for path, call in calls(".from_pretrained")
                   if "gguf_file" not in call]  # the packaged GGUF conversion reads a pinned package file
    assert local_loads and all("trust_remote_code=False" in call for _, call in local_loads), local_loads


def test_runs_write_weights_as_safetensors_only(prepared, tmp_path):
    run = pretrain(tiny_config(prepared, tmp_path / "run", max_steps=2, save_every=2, eval_every=0), progress=False)
    for directory in (run / "final", run / "checkpoints" / "step-2"):
        assert (directory / "model.safetensors").is_file()
        assert not list(directory.glob("pytorch_model*.bin")) and not list(directory.glob("*.pth.tar"))
