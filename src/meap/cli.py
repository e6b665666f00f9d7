"""The ``meap`` command: argument parsing and calls into the library, nothing else.

Every command is one entry of :data:`COMMANDS` (an evaluation kind's, of its record: :func:`commands`): its
config class, its help, how its config is read (``kind``)
and the function that runs it. Its flags are generated from the config dataclass (:mod:`meap.config`); the
training commands and the experiments read a YAML recipe too. Configs import no torch and the library is
imported only to run a command, so ``meap --help`` and an argument error are instant. A
:class:`~meap.errors.UserError` prints one line and exits with status 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
import sys
from collections.abc import Callable
from dataclasses import dataclass

from meap.config.flags import Parser, add_flags, unknown_argument
from meap.errors import UserError, error_line, is_main_process
from meap.eval.results import KINDS
from meap.eval.suite import SuiteConfig


def _bars(no_progress: bool) -> bool:
    """Progress bars on a terminal only: a redirected log gets plain lines (training) or none (evaluations)."""
    return not no_progress and sys.stderr.isatty()


def _train(module: str) -> Callable:
    def train(config, args: argparse.Namespace) -> None:
        from meap.rundir import RunDir

        run = getattr(importlib.import_module("meap.train"), module)
        output = run(config, resume=args.resume, overwrite=args.overwrite, progress=_bars(args.no_progress))
        if is_main_process():
            print(RunDir(output).done_line())

    return train


def _experiment(module: str, function: str) -> Callable:
    def experiment(config, args: argparse.Namespace) -> None:
        run = getattr(importlib.import_module(module), function)
        run(config, overwrite=args.overwrite, progress=_bars(args.no_progress))

    return experiment


def _evaluation(entry: Callable) -> Callable:
    """An evaluation: its kind's entry point, then its headline (:mod:`meap.eval.results`)."""

    def evaluate(config, args: argparse.Namespace) -> None:
        from meap.eval.results import headline

        line = headline(entry(dataclasses.replace(config, no_progress=not _bars(config.no_progress))), config.output)
        if line:
            print(line)

    return evaluate


def _prepare(config, args: argparse.Namespace) -> None:
    from meap.data.prepare import prepare_corpus

    prepare_corpus(config, progress=_bars(config.no_progress), summary=True)


def _make_mdqa(config, args: argparse.Namespace) -> None:
    from meap.eval.mdqa_data import make_mdqa

    print(f"wrote {make_mdqa(config)}")


def _generate(config, args: argparse.Namespace) -> None:
    from meap.eval.generation import complete

    completions = complete(config)
    for index, completion in enumerate(completions):
        print(completion if len(completions) == 1 else f"[{index + 1}] {completion}")


def _compare(config, args: argparse.Namespace) -> None:
    from meap.report import compare_runs

    print(f"wrote {compare_runs(config.runs, config.output)} and report.html")


def _recompute(config, args: argparse.Namespace) -> None:
    from meap.experiments.recompute import recompute

    recompute(config)


def _presets(config, args: argparse.Namespace) -> None:
    from meap.presets import PRESETS

    for name, shape in PRESETS.items():
        print(
            f"{name:16s} {shape['num_hidden_layers']} layers, d={shape['hidden_size']}, "
            f"{shape['num_attention_heads']} heads / {shape['num_key_value_heads']} KV, "
            f"FFN {shape['intermediate_size']}, context {shape['max_position_embeddings']}"
        )


@dataclass(frozen=True)
class Command:
    """One ``meap`` command. ``config``: its config class, or its name in :mod:`meap.config`,
    :mod:`meap.config.commands`, :mod:`meap.experiments.config` or :mod:`meap.experiments.recompute` (None: no
    flags). ``kind``: ``training`` (a recipe, --resume/--overwrite,
    :func:`meap.train.launch_config`), ``experiment`` (a recipe, --overwrite continues or replaces
    ``what``) or ``tool`` (flags only). ``runs``: called with the config and the parsed arguments."""

    config: str | type | None
    help: str
    runs: Callable[[object, argparse.Namespace], None]
    kind: str = "tool"
    recipe: str = ""  # the help of --config
    what: str = ""  # what --overwrite replaces, as its help names it
    quick: bool = False  # an experiment with --quick (meap.experiments.demo.QUICK)

    def config_class(self) -> type | None:
        from meap import config as configs
        from meap.config import commands
        from meap.experiments import config as experiments
        from meap.experiments import recompute

        if self.config is None or isinstance(self.config, type):
            return self.config
        modules = (configs, commands, experiments, recompute)
        return next(getattr(m, self.config) for m in modules if hasattr(m, self.config))


KIND_COMMANDS = None  # in COMMANDS, under a group's word: the evaluation kinds' commands of that group go here


def commands() -> dict[tuple[str, ...], Command]:
    """Every command, in `meap --help`'s order: :data:`COMMANDS`, with each group's evaluation kinds' commands
    where it says (each kind declares its own, :mod:`meap.eval.kind`; read from the registry now, so that a kind
    registered after import has its command too)."""
    found: dict[tuple[str, ...], Command] = {}
    for words, command in COMMANDS.items():
        if command is KIND_COMMANDS:
            found |= {
                kind.command: Command(kind.config, kind.help, _evaluation(kind.evaluate))
                for kind in KINDS.values()
                if kind.command[:1] == words
            }
        else:
            found[words] = command
    return found


_RECIPE = "YAML recipe (see configs/); resuming without one reads the run's own config.yaml"
# Every command, in `meap --help`'s order; words -> Command.
COMMANDS: dict[tuple[str, ...], Command | None] = {
    ("pretrain",): Command(
        "PretrainConfig", "pretrain a model with MEAP (or the NTP baseline)", _train("pretrain"), "training", _RECIPE
    ),
    ("sft",): Command(
        "SFTConfig", "fine-tune a causal LM with MEAP-SFT (or the NTP baseline)", _train("sft"), "training", _RECIPE
    ),
    ("demo",): Command(
        "DemoConfig",
        "the paired NTP-vs-MEAP experiment on the demo corpus, end to end (train both, NIAH, MDQA, attention, report)",
        _experiment("meap.experiments.demo", "run_demo"),
        "experiment",
        "YAML recipe (configs/demo.yaml is the default; configs/repro-small.yaml for a GPU)",
        what="demo in --output",
        quick=True,
    ),
    ("demo-sft",): Command(
        "SFTDemoConfig",
        "the paired NTP-SFT vs MEAP-SFT experiment: fine-tune a model both ways at equal tokens, multi-document "
        "QA before and after",
        _experiment("meap.experiments.demo_sft", "run_demo_sft"),
        "experiment",
        "YAML recipe (configs/evidence-sft.yaml: the one behind RESULTS.md)",
        what="run in --output",
    ),
    ("prepare",): Command("PrepareConfig", "tokenise local corpora into packed token shards", _prepare),
    ("presets",): Command(None, "list the model presets", _presets),
    ("eval",): KIND_COMMANDS,
    ("eval", "suite"): Command(
        SuiteConfig,
        "the paper's whole evaluation of one or more models, stage by stage (an interrupted suite continues)",
        _experiment("meap.eval.suite", "run_suite"),
        "experiment",
        "YAML recipe (configs/paper-eval.yaml: the CPU-sized defaults)",
        what="stages done before (each model's eval/<stage>/)",
    ),
    ("data", "make-mdqa"): Command(
        "MakeMDQAConfig", "synthetic multi-document QA in the lost-in-the-middle format", _make_mdqa
    ),
    ("analyze",): KIND_COMMANDS,
    ("generate",): Command(
        "GenerateConfig", "continue prompts with a model (greedy, or sampled with --temperature)", _generate
    ),
    ("compare",): Command("CompareConfig", "a report comparing runs (curves, evaluations, configs)", _compare),
    ("experiment", "recompute"): Command(
        "RecomputeConfig",
        "an experiment's verdict recomputed from the records file it published (--same: two runs compared)",
        _recompute,
    ),
}
GROUPS = {
    "eval": (
        "evaluation",
        "evaluate a model (NIAH, MDQA, retrieval, key-value retrieval, hallucination, commonsense, lm-eval, the suite)",
    ),
    "data": ("maker", "make evaluation data"),
    "analyze": ("analysis", "look inside models (attention)"),
    "experiment": ("experiment", "work with an experiment's published records"),
}


def _add_command(parser: argparse.ArgumentParser, command: Command, last: dict[str, frozenset]) -> None:
    """``command``'s own flags (a recipe's, --resume, --overwrite, --quick), then its config's."""
    config_cls = command.config_class()
    if command.kind == "tool":
        if config_cls is not None:
            add_flags(parser, config_cls, last=last["tool"], typed=True)
        return
    parser.add_argument("--config", metavar="YAML", help=command.recipe)
    if command.kind == "training":
        existing = parser.add_mutually_exclusive_group()
        existing.add_argument(
            "--resume", action="store_true", help="continue the run in --output from its last checkpoint"
        )
        existing.add_argument("--overwrite", action="store_true", help="replace the run in --output")
        parser.add_argument(
            "--no-progress",
            action="store_true",
            help="no progress bar: a plain line per logged step (the default when stderr is not a terminal)",
        )
    else:
        if command.quick:
            parser.add_argument(
                "--quick", action="store_true", help="every stage on a few documents and steps (a smoke test)"
            )
        parser.add_argument("--overwrite", action="store_true", help=f"replace the {command.what} (default: continue)")
        parser.add_argument("--no-progress", action="store_true", help="no progress bars (stage lines still print)")
    # What the command trains on comes first, then the keys every training run has.
    add_flags(parser.add_argument_group("config keys (override the YAML file)"), config_cls, last=last["training"])


def _parser() -> argparse.ArgumentParser:
    from meap import __version__
    from meap.config import TrainingConfig
    from meap.config.commands import GenerationOptions

    parser = Parser(prog="meap", description="Mask-Enhanced Autoregressive Prediction (MEAP).")
    parser.add_argument("--version", action="version", version=f"meap {__version__}")
    top = parser.add_subparsers(dest="command", required=True)
    last = {
        "training": frozenset(f.name for f in dataclasses.fields(TrainingConfig)),
        "tool": frozenset(f.name for f in dataclasses.fields(GenerationOptions)),
    }
    groups: dict[str, argparse._SubParsersAction] = {}
    for words, command in commands().items():
        where = top
        if len(words) > 1:
            if words[0] not in groups:
                dest, group_help = GROUPS[words[0]]
                groups[words[0]] = top.add_parser(words[0], help=group_help).add_subparsers(dest=dest, required=True)
            where = groups[words[0]]
        subparser = where.add_parser(words[-1], help=command.help)
        subparser.set_defaults(_words=words)
        _add_command(subparser, command, last)
    return parser


def _load(command: Command, args: argparse.Namespace):
    """The command's config: defaults < its recipe (--config) < its flags."""
    from meap.config import field_types, load_config

    config_cls = command.config_class()
    if config_cls is None:
        return None
    keys = set(field_types(config_cls))
    given = {key: value for key, value in vars(args).items() if key in keys and value is not None}
    if command.kind == "training":
        from meap.train import launch_config

        return launch_config(config_cls, args.config, given, args.resume)
    if command.quick and args.quick:
        from meap.experiments.demo import QUICK

        given = {**QUICK, **given}
    return load_config(config_cls, args.config if command.kind == "experiment" else None, given)


def execute(argv: list[str]) -> int:
    """Run the `meap` command line ``argv``; returns its exit status (0)."""
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise unknown_argument(unknown, Parser.commands[" ".join(["meap", *args._words])])
    command = commands()[args._words]
    command.runs(_load(command, args), args)
    return 0


def main(argv: list[str] | None = None) -> None:
    try:
        code = execute(sys.argv[1:] if argv is None else argv)
    except UserError as error:
        line = error_line(error)
        if line:
            print(line, file=sys.stderr)
        code = 2
    except KeyboardInterrupt as interrupt:
        if is_main_process():
            print("meap: interrupted" + (f"; {interrupt}" if str(interrupt) else ""), file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
