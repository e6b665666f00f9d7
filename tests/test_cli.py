"""The `meap` command as a real process on bad input: one line naming the file or key, exit status 2, no
traceback. The whole catalogue runs in-process in test_errors.py; these cases also run as processes."""

import subprocess
import sys

import pytest

from error_cases import CASES, Inputs

PROCESS_CASES = (
    "pretrain-unknown-yaml-key",
    "pretrain-seq-len-above-model",
    "prepare-malformed-jsonl-line",
    "sft-missing-field",
    "niah-empty-haystack",
    "compare-a-single-run",
)


@pytest.mark.parametrize("case_id", PROCESS_CASES)
def test_a_bad_input_stops_the_process_with_one_line(case_id, prepared, tiny_model_dir, tmp_path):
    case = next(case for case in CASES if case.id == case_id)
    argv = case.command(Inputs(tmp=tmp_path, prepared=prepared, model=tiny_model_dir))
    result = subprocess.run([sys.executable, "-m", "meap.cli", *argv], capture_output=True, text=True, timeout=300)
    assert result.returncode == 2, result.stderr
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and errors[0].startswith("meap: error: "), result.stderr
    assert result.stderr.rstrip().endswith(errors[0]) and "Traceback" not in result.stderr
    assert all(fragment in errors[0] for fragment in case.fragments), errors[0]
    assert not (tmp_path / "out").exists()


def test_every_flag_of_every_command_has_help_and_no_empty_default():
    from meap.cli import _parser
    from meap.config.flags import Parser

    _parser()
    commands = {prog: parser for prog, parser in Parser.commands.items() if not parser._subparsers}
    assert {
        "meap pretrain",
        "meap prepare",
        "meap eval niah",
        "meap eval mdqa",
        "meap analyze attention",
        "meap data make-mdqa",
        "meap compare",
    } <= set(commands)
    for prog, parser in commands.items():
        text = parser.format_help()
        assert "(default: None)" not in text and "(default: False)" not in text, prog
        for action in parser._actions:
            if action.option_strings and action.option_strings != ["-h", "--help"]:
                assert action.help, (prog, action.option_strings)
                assert action.nargs == 0 or action.metavar, (prog, action.option_strings)  # says what goes there
        outputs = [action.option_strings for action in parser._actions if "--output" in action.option_strings]
        assert not outputs or "-o" in outputs[0], prog  # every command that writes somewhere takes -o


def test_python_dash_m_meap_is_the_meap_command():
    result = subprocess.run(
        [sys.executable, "-m", "meap", "eval", "niah", "--model", "m", "-o", "o", "--lenghts", "1"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip() == "meap: error: unknown option --lenghts (did you mean `--lengths`?)"
