"""The ``meap`` command: argument parsing and calls into the library, nothing else.

Every command's flags are generated from its config dataclass (:mod:`meap.config`): the training commands'
from :mod:`meap.config.training` and :mod:`meap.config.experiments` (which YAML recipes also fill), the
others' from :mod:`meap.config.commands` (:data:`COMMANDS`). Configs import no torch and the library is
imported only to run a command, so ``meap --help`` and an argument error are instant. A
:class:`~meap.errors.UserError` prints one line and exits with status 2; anything else is a bug and keeps
its traceback.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import typing

from meap.errors import UserError, error_line, is_main_process


class _Parser(argparse.ArgumentParser):
    """argparse whose errors are meap's: one line naming the command, exit status 2 (a UserError)."""

    commands: dict[str, argparse.ArgumentParser] = {}  # prog ("meap eval niah") -> its parser

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)
        _Parser.commands[self.prog] = self

    def error(self, message: str):
        raise UserError(f"{self.prog}: {message} (see `{self.prog} --help`)")


class _HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """Defaults shown where they say something: not None, not a flag's False, not twice."""

    def _get_help_string(self, action):
        text = action.help or ""
        unshown = action.default is None or action.default is False or action.default == argparse.SUPPRESS
        if unshown or "(default" in text:
            return text
        return super()._get_help_string(action)


def _unknown_argument(unknown: list[str], parser: argparse.ArgumentParser) -> UserError:
    """``unknown option --x (did you mean `--y`?)`` from the flags of the command that was given."""
    import difflib

    flag = next((arg for arg in unknown if arg.startswith("--")), None)
    if flag is None:
        return UserError(f"{parser.prog}: unexpected argument {unknown[0]!r} (see `{parser.prog} --help`)")
    flag = flag.split("=")[0]
    known = [option for action in parser._actions for option in action.option_strings if option.startswith("--")]
    match = difflib.get_close_matches(flag, known, n=1, cutoff=0.5)
    return UserError(f"unknown option {flag}" + (f" (did you mean `{match[0]}`?)" if match else
                                                  f" (see `{parser.prog} --help`)"))


def _metavar(name: str, kind: type) -> str:
    return {int: "N", float: "NUMBER", bool: "BOOL"}.get(kind, "DIR" if name == "output" else name.upper())


def _csv(kind: type):
    def parse(text: str) -> list:
        try:
            return [kind(item) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None

    return parse


def _add_flags(target, config_cls: type, last: frozenset[str] = frozenset(), typed: bool = False) -> None:
    """One flag per config field (``--key-name VALUE``; the ``cli`` metadata of :mod:`meap.config.commands`
    says where a field looks otherwise). Unset flags stay None, so defaults come from the config alone.
    ``typed``: argparse converts numbers (its own error message); else ``load_config`` does."""
    from meap.config.loading import field_types, optional_type

    types = field_types(config_cls)
    exclusive: dict[str, argparse._MutuallyExclusiveGroup] = {}
    for f in sorted(dataclasses.fields(config_cls), key=lambda f: f.name in last):
        cli, text = f.metadata.get("cli", {}), f.metadata.get("help", "")
        kind = optional_type(types[f.name]) or types[f.name]
        item = typing.get_args(kind)[0] if typing.get_origin(kind) is list else None
        metavar = cli.get("metavar") or _metavar(f.name, item or kind)
        parent = target
        if "exclusive" in cli:
            if cli["exclusive"] not in exclusive:
                exclusive[cli["exclusive"]] = target.add_mutually_exclusive_group()
            parent = exclusive[cli["exclusive"]]
        if cli.get("positional"):
            parent.add_argument(f.name, nargs="+", metavar=metavar, help=text)
            continue
        stated = cli.get("switch") or f.default in ("", None, dataclasses.MISSING) or "(default" in text
        shown = str(f.default).lower() if isinstance(f.default, bool) else f.default
        options = dict(dest=f.name, default=None, help=text + ("" if stated else f" (default: {shown})"),
                       required=bool(cli.get("required")))
        if cli.get("switch"):
            options["action"] = "store_true"
        elif item is not None:
            options.update(type=_csv(item)) if cli.get("comma") else options.update(nargs="+")
            options["metavar"] = metavar
        elif kind is bool:
            options.update(nargs="?", const="true", metavar="BOOL")
        else:
            options.update(metavar=metavar, **({"type": kind} if typed and kind in (int, float) else {}))
        parent.add_argument(f"--{f.name.replace('_', '-')}", *[cli["short"]] if "short" in cli else [], **options)


def _bars(no_progress: bool) -> bool:
    """Progress bars on a terminal only: a redirected log gets plain lines (training) or none (evaluations)."""
    return not no_progress and sys.stderr.isatty()


def _prepare(config) -> None:
    from meap.data.prepare import prepare_corpus

    if config.merge_digits and config.train_tokenizer is None:
        raise UserError("--merge-digits: only with --train-tokenizer (a given tokenizer keeps its own rules)")
    prepare_corpus(config.inputs, config.output, tokenizer=config.tokenizer, train_tokenizer=config.train_tokenizer,
                   split_digits=not config.merge_digits, text_field=config.text_field,
                   val_fraction=config.val_fraction, num_proc=config.num_proc, overwrite=config.overwrite,
                   skip_bad_lines=config.skip_bad_lines, dataset_split=config.split,
                   dataset_config=config.config_name, streaming=config.streaming)


def _niah(config) -> None:
    from meap.eval.niah import Needle, run

    fixed = (config.needle, config.question, config.answer)
    if any(fixed) and not all(fixed):
        raise UserError("--needle, --question and --answer go together")
    _print_headline(run(config.model, config.output, haystack=config.haystack, lengths=config.lengths,
                        depths=config.depths, needle=Needle(*fixed) if all(fixed) else None, samples=config.samples,
                        seed=config.seed, distractors=config.distractors, absent=config.absent,
                        batch_size=config.batch_size, max_new_tokens=config.max_new_tokens, dtype=config.dtype,
                        variant=config.variant, value_kind=config.value_kind, progress=_bars(config.no_progress)),
                    config.output)


def _mdqa(config) -> None:
    from meap.eval.mdqa import run

    _print_headline(run(config.model, config.data, config.output, batch_size=config.batch_size,
                        max_new_tokens=config.max_new_tokens, limit=config.limit, dtype=config.dtype,
                        teacher_forced=config.teacher_forced, progress=_bars(config.no_progress)), config.output)


def _retrieval(config) -> None:
    from meap.eval.retrieval import run

    _print_headline(run(config.model, config.probes, config.output, max_new_tokens=config.max_new_tokens,
                        batch_size=config.batch_size, attention=config.attention, dtype=config.dtype,
                        progress=_bars(config.no_progress)), config.output)


def _harness(config) -> None:
    from meap.eval.harness import run

    _print_headline(run(config.model, config.tasks, config.output, num_fewshot=config.num_fewshot,
                        limit=config.limit, include_path=config.include_path, batch_size=config.batch_size,
                        dtype=config.dtype, progress=_bars(config.no_progress)), config.output)


def _attention(config) -> None:
    from meap.eval.attention import run

    _print_headline(run(config.model, config.output, samples=config.samples, length=config.length,
                        haystack=config.haystack, mask_ratio=config.mask_ratio, seed=config.seed,
                        progress=_bars(config.no_progress)), config.output)


def _print_headline(summary: dict, output: str) -> None:
    from meap.eval.results import headline

    line = headline(summary, output)
    if line:
        print(line)


def _make_mdqa(config) -> None:
    from meap.eval.mdqa_data import make_mdqa

    path = make_mdqa(config.output, num_docs=config.num_docs, gold_position=config.gold_position,
                     examples=config.examples, seed=config.seed, passage_words=config.passage_words,
                     distractors=config.distractors)
    print(f"wrote {path}")


def _generate(config) -> None:
    from meap.eval.generation import complete

    completions = complete(config)
    for index, completion in enumerate(completions):
        print(completion if len(completions) == 1 else f"[{index + 1}] {completion}")


def _compare(config) -> None:
    from meap.report import compare_runs

    print(f"wrote {compare_runs(config.runs, config.output)} and report.html")


def _presets(config) -> None:
    from meap.presets import PRESETS

    for name, shape in PRESETS.items():
        print(f"{name:16s} {shape['num_hidden_layers']} layers, d={shape['hidden_size']}, "
              f"{shape['num_attention_heads']} heads / {shape['num_key_value_heads']} KV, "
              f"FFN {shape['intermediate_size']}, context {shape['max_position_embeddings']}")


# The commands that do not train, in `meap --help`'s order after the training ones: words -> (config class
# in meap.config.commands, or None for none; help; the function that runs it).
COMMANDS = {
    ("prepare",): ("PrepareConfig", "tokenise local corpora into packed token shards", _prepare),
    ("presets",): (None, "list the model presets", _presets),
    ("eval", "niah"): ("NIAHConfig", "needle in a haystack", _niah),
    ("eval", "mdqa"): ("MDQAConfig", "multi-document QA (lost in the middle)", _mdqa),
    ("eval", "retrieval"): ("RetrievalConfig", "key-based retrieval probes, scored strictly (one value, the asked "
                            "one)", _retrieval),
    ("eval", "harness"): ("HarnessConfig", "lm-evaluation-harness tasks", _harness),
    ("data", "make-mdqa"): ("MakeMDQAConfig", "synthetic multi-document QA in the lost-in-the-middle format",
                            _make_mdqa),
    ("analyze", "attention"): ("AttentionConfig", "attention from the query onto the needle, entropy, and the "
                               "masked-key score decay (the MEAP paper's analysis)", _attention),
    ("generate",): ("GenerateConfig", "continue prompts with a model (greedy, or sampled with --temperature)",
                    _generate),
    ("compare",): ("CompareConfig", "a report comparing runs (curves, evaluations, configs)", _compare),
}
GROUPS = {"eval": ("evaluation", "evaluate a model (NIAH, multi-document QA, key-based retrieval, lm-eval)"),
          "data": ("maker", "make evaluation data"), "analyze": ("analysis", "look inside models (attention)")}
TRAINING = {"pretrain": ("PretrainConfig", "pretrain a model with MEAP (or the NTP baseline)"),
            "sft": ("SFTConfig", "fine-tune a causal LM with MEAP-SFT (or the NTP baseline)")}


def _parser() -> argparse.ArgumentParser:
    from meap import __version__, config as configs
    from meap.config import commands as command_configs

    parser = _Parser(prog="meap", description="Mask-Enhanced Autoregressive Prediction (MEAP).")
    parser.add_argument("--version", action="version", version=f"meap {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    shared = frozenset(f.name for f in dataclasses.fields(configs.TrainingConfig))

    for name, (config_name, text) in TRAINING.items():
        training = commands.add_parser(name, help=text)
        training.set_defaults(_words=(name,), _config=getattr(configs, config_name))
        training.add_argument("--config", metavar="YAML", help="YAML recipe (see configs/); resuming without one "
                              "reads the run's own config.yaml")
        existing = training.add_mutually_exclusive_group()
        existing.add_argument("--resume", action="store_true",
                              help="continue the run in --output from its last checkpoint")
        existing.add_argument("--overwrite", action="store_true", help="replace the run in --output")
        training.add_argument("--no-progress", action="store_true", help="no progress bar: a plain line per logged "
                              "step (the default when stderr is not a terminal)")
        # What the command trains on comes first, then the keys every training run has.
        _add_flags(training.add_argument_group("config keys (override the YAML file)"), getattr(configs, config_name),
                   last=shared)

    experiments = (("demo", configs.DemoConfig, "the paired NTP-vs-MEAP experiment on the demo corpus, end to end "
                    "(train both, NIAH, MDQA, attention, report)",
                    "YAML recipe (configs/demo.yaml is the default; configs/repro-small.yaml for a GPU)", "demo"),
                   ("demo-sft", configs.SFTDemoConfig, "the paired NTP-SFT vs MEAP-SFT experiment: fine-tune a model "
                    "both ways at equal tokens, multi-document QA before and after",
                    "YAML recipe (configs/evidence-sft.yaml: the one behind RESULTS.md)", "run"))
    for name, config_cls, text, recipe, what in experiments:
        experiment = commands.add_parser(name, help=text)
        experiment.set_defaults(_words=(name,), _config=config_cls)
        experiment.add_argument("--config", metavar="YAML", help=recipe)
        if name == "demo":
            experiment.add_argument("--quick", action="store_true",
                                    help="every stage on a few documents and steps (a smoke test)")
        experiment.add_argument("--overwrite", action="store_true",
                                help=f"replace the {what} in --output (default: continue it)")
        experiment.add_argument("--no-progress", action="store_true",
                                help="no progress bars (stage lines still print)")
        _add_flags(experiment.add_argument_group("config keys (override the YAML file)"), config_cls, last=shared)

    generation = frozenset(f.name for f in dataclasses.fields(command_configs.GenerationOptions))
    groups: dict[str, argparse._SubParsersAction] = {}
    for words, (config_name, text, _) in COMMANDS.items():
        where = commands
        if len(words) > 1:
            if words[0] not in groups:
                dest, group_help = GROUPS[words[0]]
                groups[words[0]] = commands.add_parser(words[0], help=group_help).add_subparsers(dest=dest,
                                                                                                required=True)
            where = groups[words[0]]
        command = where.add_parser(words[-1], help=text)
        config_cls = getattr(command_configs, config_name) if config_name else None
        command.set_defaults(_words=words, _config=config_cls)
        if config_cls is not None:
            _add_flags(command, config_cls, last=generation, typed=True)
    return parser


def run(argv: list[str]) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise _unknown_argument(unknown, _Parser.commands[" ".join(["meap", *args._words])])
    config_cls = args._config
    keys = {f.name for f in dataclasses.fields(config_cls)} if config_cls else set()
    given = {key: value for key, value in vars(args).items() if key in keys and value is not None}
    from meap.config import load_config

    if args._words in COMMANDS:
        COMMANDS[args._words][2](load_config(config_cls, None, given) if config_cls else None)
        return 0

    if args.command == "demo":
        from meap.demo import QUICK, run_demo

        config = load_config(config_cls, args.config, {**(QUICK if args.quick else {}), **given})
        run_demo(config, overwrite=args.overwrite, progress=_bars(args.no_progress))
        return 0
    if args.command == "demo-sft":
        from meap.demo_sft import run_demo_sft

        run_demo_sft(load_config(config_cls, args.config, given), overwrite=args.overwrite,
                     progress=_bars(args.no_progress))
        return 0
    from meap.rundir import RunDir
    from meap.train import launch_config, pretrain, sft

    config = launch_config(config_cls, args.config, given, args.resume)
    train = pretrain if args.command == "pretrain" else sft
    output = train(config, resume=args.resume, overwrite=args.overwrite, progress=_bars(args.no_progress))
    if is_main_process():
        print(RunDir(output).done_line())
    return 0


def main(argv: list[str] | None = None) -> None:
    try:
        code = run(sys.argv[1:] if argv is None else argv)
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
