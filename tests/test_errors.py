"""The bad-input catalogue (docs/errors.md): every case runs the real `meap` command on a real bad file or
flag and must exit with status 2 and one `meap: error:` line naming what is wrong, with no traceback and
nothing written (the directory the case works in is byte-for-byte what it was before the command).

Each case builds its bad input under ``tmp`` and returns the command line. The catalogue in
docs/errors.md lists the same case ids; a test keeps the two in step.
"""

import gzip
import importlib.util
import json
import re
from pathlib import Path

import pytest
import torch

from meap.cli import main

from error_cases import CASES, DOC, Inputs


def snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("case", CASES, ids=[case.id for case in CASES])
def test_bad_input_is_one_line_exit_2_and_writes_nothing(case, prepared, tiny_model_dir, tmp_path, capsys):
    if case.id == "niah-float16-on-cpu" and torch.cuda.is_available():
        pytest.skip("the machine has CUDA")
    if case.id == "pretrain-report-to-not-installed" and importlib.util.find_spec("wandb") is not None:
        pytest.skip("wandb is installed")
    inputs = Inputs(tmp=tmp_path, prepared=prepared, model=tiny_model_dir)
    (tmp_path / "latin1.txt").write_bytes("first line\ncaf\xe9\n".encode("latin-1"))
    with gzip.open(tmp_path / "bad.jsonl.gz", "wt") as out:
        out.write(json.dumps({"question": "q?", "answers": ["a"], "ctxs": [{"title": "t", "text": "x"}]}) + "\n{oops\n")
    argv = case.command(inputs)
    before = snapshot(tmp_path)
    capsys.readouterr()

    with pytest.raises(SystemExit) as exit_info:
        main(argv)

    stderr = capsys.readouterr().err
    assert exit_info.value.code == 2, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("meap: error: ")]
    assert len(errors) == 1 and stderr.rstrip().endswith(errors[0]), stderr
    assert "Traceback" not in stderr
    for fragment in case.fragments:
        assert fragment in errors[0], (fragment, errors[0])
    assert snapshot(tmp_path) == before, "the command wrote or changed files"


def test_the_catalogue_lists_exactly_the_tested_cases():
    documented = re.findall(r"^\| `([a-z0-9-]+)` \|", DOC.read_text(encoding="utf-8"), flags=re.M)
    assert sorted(documented) == sorted(case.id for case in CASES)
    assert len(CASES) >= 25
