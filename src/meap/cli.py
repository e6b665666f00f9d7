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

from meap.config.flags import Parser, add_flags, unknown_argument
from meap.errors import UserError, error_line, is_main_process


def _bars(no_progress: bool) -> bool:
    """Progress bars on a terminal only: a redirected log gets plain lines (training) or none (evaluations)."""
    return not no_progress and sys.stderr.isatty()


def _prepare(config) -> None:
    from meap.data.prepare import prepare_corpus

    if config.merge_digits and config.train_tokenizer is None:
        raise UserError("--merge-digits: only with --train-tokenizer (a given tokenizer keeps its own rules)")
    prepare_corpus(
        config.inputs,
        config.output,
        tokenizer=config.tokenizer,
        train_tokenizer=config.train_tokenizer,
        split_digits=not config.merge_digits,
        text_field=config.text_field,
        val_fraction=config.val_fraction,
        num_proc=config.num_proc,
        overwrite=config.overwrite,
        skip_bad_lines=config.skip_bad_lines,
        dataset_split=config.split,
        dataset_config=config.config_name,
        streaming=config.streaming,
    )


def _niah(config) -> None:
    from meap.eval.niah import Needle, run

    fixed = (config.needle, config.question, config.answer)
    if any(fixed) and not all(fixed):
        raise UserError("--needle, --question and --answer go together")
    _print_headline(
        run(
            config.model,
            config.output,
            haystack=config.haystack,
            lengths=config.lengths,
            depths=config.depths,
            needle=Needle(*fixed) if all(fixed) else None,
            samples=config.samples,
            seed=config.seed,
            distractors=config.distractors,
            absent=config.absent,
            batch_size=config.batch_size,
            max_new_tokens=config.max_new_tokens,
            dtype=config.dtype,
            variant=config.variant,
            value_kind=config.value_kind,
            progress=_bars(config.no_progress),
        ),
        config.output,
    )


def _mdqa(config) -> None:
    from meap.eval.mdqa import run

    _print_headline(
        run(
            config.model,
            config.data,
            config.output,
            batch_size=config.batch_size,
            max_new_tokens=config.max_new_tokens,
            limit=config.limit,
            dtype=config.dtype,
            teacher_forced=config.teacher_forced,
            progress=_bars(config.no_progress),
        ),
        config.output,
    )


def _retrieval(config) -> None:
    from meap.eval.retrieval import run

    _print_headline(
        run(
            config.model,
            config.probes,
            config.output,
            max_new_tokens=config.max_new_tokens,
            batch_size=config.batch_size,
            attention=config.attention,
            dtype=config.dtype,
            progress=_bars(config.no_progress),
        ),
        config.output,
    )


def _harness(config) -> None:
    from meap.eval.harness import run

    _print_headline(
        run(
            config.model,
            config.tasks,
            config.output,
            num_fewshot=config.num_fewshot,
            limit=config.limit,
            include_path=config.include_path,
            batch_size=config.batch_size,
            dtype=config.dtype,
            progress=_bars(config.no_progress),
        ),
        config.output,
    )


def _attention(config) -> None:
    from meap.eval.attention import run

    _print_headline(
        run(
            config.model,
            config.output,
            samples=config.samples,
            length=config.length,
            haystack=config.haystack,
            mask_ratio=config.mask_ratio,
            seed=config.seed,
            progress=_bars(config.no_progress),
        ),
        config.output,
    )


def _print_headline(summary: dict, output: str) -> None:
    from meap.eval.results import headline

    line = headline(summary, output)
    if line:
        print(line)


def _make_mdqa(config) -> None:
    from meap.eval.mdqa_data import make_mdqa

    path = make_mdqa(
        config.output,
        num_docs=config.num_docs,
        gold_position=config.gold_position,
        examples=config.examples,
        seed=config.seed,
        passage_words=config.passage_words,
        distractors=config.distractors,
    )
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
        print(
            f"{name:16s} {shape['num_hidden_layers']} layers, d={shape['hidden_size']}, "
            f"{shape['num_attention_heads']} heads / {shape['num_key_value_heads']} KV, "
            f"FFN {shape['intermediate_size']}, context {shape['max_position_embeddings']}"
        )


# The commands that do not train, in `meap --help`'s order after the training ones: words -> (config class
# in meap.config.commands, or None for none; help; the function that runs it).
COMMANDS = {
    ("prepare",): ("PrepareConfig", "tokenise local corpora into packed token shards", _prepare),
    ("presets",): (None, "list the model presets", _presets),
    ("eval", "niah"): ("NIAHConfig", "needle in a haystack", _niah),
    ("eval", "mdqa"): ("MDQAConfig", "multi-document QA (lost in the middle)", _mdqa),
    ("eval", "retrieval"): (
        "RetrievalConfig",
        "key-based retrieval probes, scored strictly (one value, the asked one)",
        _retrieval,
    ),
    ("eval", "harness"): ("HarnessConfig", "lm-evaluation-harness tasks", _harness),
    ("data", "make-mdqa"): (
        "MakeMDQAConfig",
        "synthetic multi-document QA in the lost-in-the-middle format",
        _make_mdqa,
    ),
    ("analyze", "attention"): (
        "AttentionConfig",
        "attention from the query onto the needle, entropy, and the masked-key score decay (the MEAP paper's analysis)",
        _attention,
    ),
    ("generate",): (
        "GenerateConfig",
        "continue prompts with a model (greedy, or sampled with --temperature)",
        _generate,
    ),
    ("compare",): ("CompareConfig", "a report comparing runs (curves, evaluations, configs)", _compare),
}
GROUPS = {
    "eval": ("evaluation", "evaluate a model (NIAH, multi-document QA, key-based retrieval, lm-eval)"),
    "data": ("maker", "make evaluation data"),
    "analyze": ("analysis", "look inside models (attention)"),
}
TRAINING = {
    "pretrain": ("PretrainConfig", "pretrain a model with MEAP (or the NTP baseline)"),
    "sft": ("SFTConfig", "fine-tune a causal LM with MEAP-SFT (or the NTP baseline)"),
}


def _parser() -> argparse.ArgumentParser:
    from meap import __version__
    from meap import config as configs
    from meap.config import commands as command_configs

    parser = Parser(prog="meap", description="Mask-Enhanced Autoregressive Prediction (MEAP).")
    parser.add_argument("--version", action="version", version=f"meap {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)
    shared = frozenset(f.name for f in dataclasses.fields(configs.TrainingConfig))

    for name, (config_name, text) in TRAINING.items():
        training = commands.add_parser(name, help=text)
        training.set_defaults(_words=(name,), _config=getattr(configs, config_name))
        training.add_argument(
            "--config",
            metavar="YAML",
            help="YAML recipe (see configs/); resuming without one reads the run's own config.yaml",
        )
        existing = training.add_mutually_exclusive_group()
        existing.add_argument(
            "--resume", action="store_true", help="continue the run in --output from its last checkpoint"
        )
        existing.add_argument("--overwrite", action="store_true", help="replace the run in --output")
        training.add_argument(
            "--no-progress",
            action="store_true",
            help="no progress bar: a plain line per logged step (the default when stderr is not a terminal)",
        )
        # What the command trains on comes first, then the keys every training run has.
        add_flags(
            training.add_argument_group("config keys (override the YAML file)"),
            getattr(configs, config_name),
            last=shared,
        )

    experiments = (
        (
            "demo",
            configs.DemoConfig,
            "the paired NTP-vs-MEAP experiment on the demo corpus, end to end "
            "(train both, NIAH, MDQA, attention, report)",
            "YAML recipe (configs/demo.yaml is the default; configs/repro-small.yaml for a GPU)",
            "demo",
        ),
        (
            "demo-sft",
            configs.SFTDemoConfig,
            "the paired NTP-SFT vs MEAP-SFT experiment: fine-tune a model "
            "both ways at equal tokens, multi-document QA before and after",
            "YAML recipe (configs/evidence-sft.yaml: the one behind RESULTS.md)",
            "run",
        ),
    )
    for name, config_cls, text, recipe, what in experiments:
        experiment = commands.add_parser(name, help=text)
        experiment.set_defaults(_words=(name,), _config=config_cls)
        experiment.add_argument("--config", metavar="YAML", help=recipe)
        if name == "demo":
            experiment.add_argument(
                "--quick", action="store_true", help="every stage on a few documents and steps (a smoke test)"
            )
        experiment.add_argument(
            "--overwrite", action="store_true", help=f"replace the {what} in --output (default: continue it)"
        )
        experiment.add_argument("--no-progress", action="store_true", help="no progress bars (stage lines still print)")
        add_flags(experiment.add_argument_group("config keys (override the YAML file)"), config_cls, last=shared)

    generation = frozenset(f.name for f in dataclasses.fields(command_configs.GenerationOptions))
    groups: dict[str, argparse._SubParsersAction] = {}
    for words, (config_name, text, _) in COMMANDS.items():
        where = commands
        if len(words) > 1:
            if words[0] not in groups:
                dest, group_help = GROUPS[words[0]]
                groups[words[0]] = commands.add_parser(words[0], help=group_help).add_subparsers(
                    dest=dest, required=True
                )
            where = groups[words[0]]
        command = where.add_parser(words[-1], help=text)
        config_cls = getattr(command_configs, config_name) if config_name else None
        command.set_defaults(_words=words, _config=config_cls)
        if config_cls is not None:
            add_flags(command, config_cls, last=generation, typed=True)
    return parser


def run(argv: list[str]) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        raise unknown_argument(unknown, Parser.commands[" ".join(["meap", *args._words])])
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

        run_demo_sft(
            load_config(config_cls, args.config, given), overwrite=args.overwrite, progress=_bars(args.no_progress)
        )
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
