"""The ``meap`` command: argument parsing and calls into the library, nothing else.

Imports are lazy so ``meap --help`` is instant. A :class:`~meap.errors.UserError` prints one line and
exits with status 2; anything else is a bug and keeps its traceback.
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


def _config_flags(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One ``--key-name VALUE`` flag per config field; values are typed later by ``load_config``."""
    from meap.config import TrainingConfig, field_types

    group = parser.add_argument_group("config keys (override the YAML file)")
    types = field_types(config_cls)
    shared = {f.name for f in dataclasses.fields(TrainingConfig)}
    # What the command trains on comes first, then the keys every training run has.
    for f in sorted(dataclasses.fields(config_cls), key=lambda f: f.name in shared):
        text = f.metadata.get("help", "")
        shown = str(f.default).lower() if isinstance(f.default, bool) else f.default
        stated = f.default in ("", dataclasses.MISSING) or "(default" in text
        default = "" if stated else f" (default: {shown})"
        kind = types[f.name]
        if kind is bool:
            options = dict(nargs="?", const="true", metavar="BOOL")
        elif typing.get_origin(kind) is list:
            options = dict(nargs="+", metavar=_metavar(f.name, typing.get_args(kind)[0]))
        else:
            options = dict(metavar=_metavar(f.name, kind))
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None, help=text + default, **options)


def _parser() -> argparse.ArgumentParser:
    from meap.config import DemoConfig, PretrainConfig, SFTConfig, SFTDemoConfig

    from meap import __version__

    parser = _Parser(prog="meap", description="Mask-Enhanced Autoregressive Prediction (MEAP).")
    parser.add_argument("--version", action="version", version=f"meap {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    for name, config_cls, text in (("pretrain", PretrainConfig, "pretrain a model with MEAP (or the NTP baseline)"),
                                   ("sft", SFTConfig, "fine-tune a causal LM with MEAP-SFT (or the NTP baseline)")):
        training = commands.add_parser(name, help=text)
        training.add_argument("--config", metavar="YAML", help="YAML recipe (see configs/); resuming without one "
                              "reads the run's own config.yaml")
        existing = training.add_mutually_exclusive_group()
        existing.add_argument("--resume", action="store_true",
                              help="continue the run in --output from its last checkpoint")
        existing.add_argument("--overwrite", action="store_true", help="replace the run in --output")
        training.add_argument("--no-progress", action="store_true", help="no progress bar")
        _config_flags(training, config_cls)

    experiments = (("demo", DemoConfig, "the paired NTP-vs-MEAP experiment on the demo corpus, end to end (train "
                    "both, NIAH, MDQA, attention, report)",
                    "YAML recipe (configs/demo.yaml is the default; configs/repro-small.yaml for a GPU)", "demo"),
                   ("demo-sft", SFTDemoConfig, "the paired NTP-SFT vs MEAP-SFT experiment: fine-tune a model both "
                    "ways at equal tokens, multi-document QA before and after",
                    "YAML recipe (configs/evidence-sft.yaml: the one behind RESULTS.md)", "run"))
    for name, config_cls, text, recipe, what in experiments:
        experiment = commands.add_parser(name, help=text)
        experiment.add_argument("--config", metavar="YAML", help=recipe)
        if name == "demo":
            experiment.add_argument("--quick", action="store_true",
                                    help="every stage on a few documents and steps (a smoke test)")
        experiment.add_argument("--overwrite", action="store_true",
                                help=f"replace the {what} in --output (default: continue it)")
        experiment.add_argument("--no-progress", action="store_true",
                                help="no progress bars (stage lines still print)")
        _config_flags(experiment, config_cls)

    prepare = commands.add_parser("prepare", help="tokenise local corpora into packed token shards")
    prepare.add_argument("inputs", nargs="+", metavar="INPUT",
                         help="text files (each file is one document), directories, globs, JSONL/JSON (one document "
                              "per record), Parquet, a saved `datasets` dataset, `hf:NAME` (a hub dataset id or a "
                              "directory laid out as one, through datasets.load_dataset), or `builtin`")
    prepare.add_argument("--output", "-o", required=True, metavar="DIR", help="directory to write the shards into")
    source = prepare.add_mutually_exclusive_group()
    source.add_argument("--tokenizer", metavar="TOKENIZER",
                        help="a Hugging Face tokenizer or model directory, a hub id (org/name), a meap run "
                             "directory, `gpt2` (packaged; the default) or `smollm2-135m` (packaged): the tokenizer "
                             "of the model to train")
    source.add_argument("--train-tokenizer", type=int, metavar="VOCAB_SIZE",
                        help="train a byte-level BPE of this many tokens on the corpus")
    prepare.add_argument("--merge-digits", action="store_true",
                         help="with --train-tokenizer: let numbers merge into multi-digit tokens (GPT-2's way) "
                              "instead of one token per digit")
    prepare.add_argument("--text-field", default="text", metavar="KEY",
                         help="field holding the text in JSONL/JSON/Parquet/datasets")
    prepare.add_argument("--val-fraction", type=float, default=0.005, metavar="FRACTION",
                         help="share of the corpus held out for validation (a small corpus holds out at least "
                              "~8,192 tokens, at most a tenth)")
    prepare.add_argument("--num-proc", type=int, default=None, metavar="N",
                         help="tokeniser processes (default: CPUs, at most 8)")
    prepare.add_argument("--overwrite", action="store_true", help="replace an existing prepared directory")
    prepare.add_argument("--split", default="train", metavar="NAME", help="with an `hf:NAME` input: the split to read")
    prepare.add_argument("--config-name", metavar="NAME", help="with an `hf:NAME` input: the dataset's configuration")
    prepare.add_argument("--streaming", action="store_true",
                         help="with an `hf:NAME` input: stream it (corpora larger than memory or disk)")
    prepare.add_argument("--skip-bad-lines", action="store_true",
                         help="pass over JSONL lines that are not JSON objects with the text field (counted and "
                              "reported) instead of stopping at the first")

    commands.add_parser("presets", help="list the model presets")
    _eval_parsers(commands.add_parser("eval", help="evaluate a model (NIAH, multi-document QA, lm-eval)"))
    _data_parsers(commands.add_parser("data", help="make evaluation data"))
    _analyze_parsers(commands.add_parser("analyze", help="look inside models (attention)"))
    compare = commands.add_parser("compare", help="a report comparing runs (curves, evaluations, configs)")
    compare.add_argument("runs", nargs="+", metavar="RUN",
                         help="run directories (evaluation outputs inside them are found)")
    compare.add_argument("--output", "-o", required=True, metavar="DIR",
                         help="directory for report.md, report.html and plots")
    return parser


def _analyze_parsers(parser: argparse.ArgumentParser) -> None:
    analyses = parser.add_subparsers(dest="analysis", required=True)
    attention = analyses.add_parser("attention", help="attention from the query onto the needle, entropy, and "
                                    "the masked-key score decay (the MEAP paper's analysis)")
    attention.add_argument("--model", required=True, nargs="+", metavar="MODEL",
                           help="one or more: Hugging Face model directories, hub ids, meap run directories, "
                                "`smollm2-135m`")
    attention.add_argument("--output", "-o", required=True, metavar="DIR",
                           help="directory for attention.json and the plots")
    attention.add_argument("--samples", type=int, default=8, metavar="N", help="probes (needle inputs) per model")
    attention.add_argument("--length", type=int, default=1024, metavar="TOKENS", help="probe length in model tokens")
    attention.add_argument("--haystack", nargs="+", default=["builtin"], metavar="FILE",
                           help="text files, `builtin` (Paul Graham essays) or `builtin-prose` (default: builtin)")
    attention.add_argument("--mask-ratio", type=float, default=0.15, metavar="RATIO",
                           help="context share masked in the masked copy")
    attention.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the probes' needles and masks")
    attention.add_argument("--no-progress", action="store_true", help="no progress bars")


def _csv(kind: type):
    def parse(text: str) -> list:
        try:
            return [kind(item) for item in text.split(",") if item.strip()]
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected comma-separated {kind.__name__}s, got {text!r}") from None

    return parse


DTYPE_HELP = "weights' precision: auto (bfloat16 on CUDA, float32 on CPU), float32, bfloat16 or float16 (CUDA)"


def _eval_parsers(parser: argparse.ArgumentParser) -> None:
    evals = parser.add_subparsers(dest="evaluation", required=True)
    model_help = "a Hugging Face model directory, a hub id (org/name), a meap run directory, or `smollm2-135m`"
    niah = evals.add_parser("niah", help="needle in a haystack")
    niah.add_argument("--model", required=True, metavar="MODEL", help=model_help)
    niah.add_argument("--output", "-o", required=True, metavar="DIR",
                      help="directory for results.jsonl, summary.json, heatmap.png")
    niah.add_argument("--haystack", nargs="+", default=["builtin"], metavar="FILE",
                      help="text files, `builtin` (Paul Graham essays) or `builtin-prose` (public-domain prose) "
                           "(default: builtin)")
    niah.add_argument("--lengths", type=_csv(int), default=[512, 1024, 2048], metavar="N,N,...",
                      help="prompt lengths in model tokens (default: 512,1024,2048)")
    niah.add_argument("--depths", type=_csv(float), default=[0, 25, 50, 75, 100], metavar="PERCENT,...",
                      help="needle depths in percent (default: 0,25,50,75,100)")
    niah.add_argument("--needle", metavar="SENTENCE",
                      help="a fixed needle sentence (default: random RULER-style needles)")
    niah.add_argument("--question", metavar="TEXT", help="the question for --needle")
    niah.add_argument("--answer", metavar="TEXT", help="the expected answer for --needle")
    niah.add_argument("--samples", type=int, default=1, metavar="N", help="needles per cell")
    niah.add_argument("--distractors", type=int, default=0, metavar="N",
                      help="other needles (other keys and values) in each haystack: RULER's multi-key NIAH")
    niah.add_argument("--absent", action="store_true",
                      help="control: leave the asked needle out (only distractors remain); summary.json then "
                           "says how often a distractor's value was given")
    niah.add_argument("--variant", default="single", metavar="VARIANT",
                      help="single, multikey (3+ distractor keys), multivalue (4 values under one key, all to "
                           "recall), multiquery (4 keys asked at once) or reasoning (two needles to combine): RULER's "
                           "NIAH tasks and NeedleBench's multi-needle reasoning")
    niah.add_argument("--value-kind", default="numbers", metavar="KIND", help="needle values: numbers, words or uuids")
    niah.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the needles and their placement")

    mdqa = evals.add_parser("mdqa", help="multi-document QA (lost in the middle)")
    mdqa.add_argument("--model", required=True, metavar="MODEL", help=model_help)
    mdqa.add_argument("--data", nargs="+", required=True, metavar="FILE",
                      help="JSONL(.gz) files in the lost-in-the-middle format (`meap data make-mdqa`, or nq-open-*)")
    mdqa.add_argument("--output", "-o", required=True, metavar="DIR",
                      help="directory for results.jsonl, summary.json, mdqa.png")
    mdqa.add_argument("--limit", type=int, metavar="N", help="examples per file (default: all)")

    harness = evals.add_parser("harness", help="lm-evaluation-harness tasks")
    harness.add_argument("--model", required=True, metavar="MODEL", help=model_help)
    harness.add_argument("--tasks", type=_csv(str), required=True, metavar="TASK,...",
                         help="comma-separated lm-eval task names")
    harness.add_argument("--output", "-o", required=True, metavar="DIR", help="directory for results.json")
    harness.add_argument("--num-fewshot", type=int, default=0, metavar="N", help="examples shown before each question")
    harness.add_argument("--limit", type=int, metavar="N", help="examples per task (default: all)")
    harness.add_argument("--include-path", metavar="DIR",
                         help="directory of local lm-eval task definitions (offline data)")
    for evaluation in (niah, mdqa, harness):
        evaluation.add_argument("--batch-size", type=int, default=8, metavar="N", help="prompts per forward pass")
        if evaluation is not harness:
            evaluation.add_argument("--max-new-tokens", type=int, default=32, metavar="N",
                                    help="longest answer generated")
        evaluation.add_argument("--dtype", default="auto", metavar="DTYPE", help=DTYPE_HELP)
        evaluation.add_argument("--no-progress", action="store_true", help="no progress bar")


def _data_parsers(parser: argparse.ArgumentParser) -> None:
    makers = parser.add_subparsers(dest="maker", required=True)
    make = makers.add_parser("make-mdqa", help="synthetic multi-document QA in the lost-in-the-middle format")
    make.add_argument("--output", "-o", required=True, metavar="FILE", help="file to write (.jsonl.gz is gzipped)")
    make.add_argument("--num-docs", type=int, default=20, metavar="N", help="documents per question")
    make.add_argument("--gold-position", type=int, default=0, metavar="N", help="0-based position of the gold document")
    make.add_argument("--passage-words", type=int, default=100, metavar="N",
                      help="words per document (NQ-Open's are about 100)")
    make.add_argument("--examples", type=int, default=100, metavar="N", help="questions to write")
    make.add_argument("--seed", type=int, default=0, metavar="N", help="seed of the passages and the questions")


def _run_eval(args: argparse.Namespace) -> dict:
    if args.evaluation == "niah":
        from meap.eval.niah import Needle, run

        fixed = (args.needle, args.question, args.answer)
        if any(fixed) and not all(fixed):
            raise UserError("--needle, --question and --answer go together")
        return run(args.model, args.output, haystack=args.haystack, lengths=args.lengths, depths=args.depths,
                   needle=Needle(*fixed) if all(fixed) else None, samples=args.samples, seed=args.seed,
                   distractors=args.distractors, absent=args.absent, batch_size=args.batch_size,
                   max_new_tokens=args.max_new_tokens, dtype=args.dtype, variant=args.variant,
                   value_kind=args.value_kind, progress=not args.no_progress)
    if args.evaluation == "mdqa":
        from meap.eval.mdqa import run

        return run(args.model, args.data, args.output, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens,
                   limit=args.limit, dtype=args.dtype, progress=not args.no_progress)
    from meap.eval.harness import run

    return run(args.model, args.tasks, args.output, num_fewshot=args.num_fewshot, limit=args.limit,
               include_path=args.include_path, batch_size=args.batch_size, dtype=args.dtype,
               progress=not args.no_progress)


def run(argv: list[str]) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown:
        given = " ".join(["meap", *(getattr(args, dest) for dest in ("command", "evaluation", "maker", "analysis")
                                    if getattr(args, dest, None))])
        raise _unknown_argument(unknown, _Parser.commands[given])
    if args.command == "presets":
        from meap.presets import PRESETS

        for name, shape in PRESETS.items():
            print(f"{name:16s} {shape['num_hidden_layers']} layers, d={shape['hidden_size']}, "
                  f"{shape['num_attention_heads']} heads / {shape['num_key_value_heads']} KV, "
                  f"FFN {shape['intermediate_size']}, context {shape['max_position_embeddings']}")
        return 0
    from meap.config import DemoConfig, PretrainConfig, SFTConfig, SFTDemoConfig

    config_cls = {"pretrain": PretrainConfig, "sft": SFTConfig, "demo": DemoConfig,
                  "demo-sft": SFTDemoConfig}.get(args.command)
    if args.command == "compare":
        from meap.report import compare_runs

        print(f"wrote {compare_runs(args.runs, args.output)} and report.html")
        return 0
    if args.command in ("eval", "analyze"):
        from meap.eval.results import headline

        if args.command == "eval":
            summary = _run_eval(args)
        else:
            from meap.eval.attention import run as analyse_attention

            summary = analyse_attention(args.model, args.output, samples=args.samples, length=args.length,
                                        haystack=args.haystack, mask_ratio=args.mask_ratio, seed=args.seed,
                                        progress=not args.no_progress)
        print(headline(summary, args.output))
        return 0
    if args.command == "data":
        from meap.eval.mdqa_data import make_mdqa

        path = make_mdqa(args.output, num_docs=args.num_docs, gold_position=args.gold_position,
                         examples=args.examples, seed=args.seed, passage_words=args.passage_words)
        print(f"wrote {path}")
        return 0
    if args.command == "prepare":
        from meap.data.prepare import prepare_corpus

        if args.merge_digits and args.train_tokenizer is None:
            raise UserError("--merge-digits: only with --train-tokenizer (a given tokenizer keeps its own rules)")
        prepare_corpus(args.inputs, args.output, tokenizer=args.tokenizer, train_tokenizer=args.train_tokenizer,
                       split_digits=not args.merge_digits, text_field=args.text_field,
                       val_fraction=args.val_fraction, num_proc=args.num_proc, overwrite=args.overwrite,
                       skip_bad_lines=args.skip_bad_lines, dataset_split=args.split,
                       dataset_config=args.config_name, streaming=args.streaming)
        return 0
    from meap.config import load_config
    from meap.train import launch_config, pretrain, sft

    keys = {f.name for f in dataclasses.fields(config_cls)}
    overrides = {k: v for k, v in vars(args).items() if k in keys and v is not None}
    if args.command == "demo":
        from meap.demo import QUICK, run_demo

        config = load_config(DemoConfig, args.config, {**(QUICK if args.quick else {}), **overrides})
        run_demo(config, overwrite=args.overwrite, progress=not args.no_progress)
        return 0
    if args.command == "demo-sft":
        from meap.demo_sft import run_demo_sft

        run_demo_sft(load_config(SFTDemoConfig, args.config, overrides), overwrite=args.overwrite,
                     progress=not args.no_progress)
        return 0
    config = launch_config(config_cls, args.config, overrides, args.resume)
    train = pretrain if args.command == "pretrain" else sft
    output = train(config, resume=args.resume, overwrite=args.overwrite, progress=not args.no_progress)
    if is_main_process():
        print(f"done: {output / 'final'}")
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
