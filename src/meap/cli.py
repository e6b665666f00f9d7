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


def _config_flags(parser: argparse.ArgumentParser, config_cls: type) -> None:
    """One ``--key-name VALUE`` flag per config field; values are typed later by ``load_config``."""
    from meap.config import TrainingConfig, field_types

    group = parser.add_argument_group("config keys (override the YAML file)")
    types = field_types(config_cls)
    shared = {f.name for f in dataclasses.fields(TrainingConfig)}
    # What the command trains on comes first, then the keys every training run has.
    for f in sorted(dataclasses.fields(config_cls), key=lambda f: f.name in shared):
        default = f" (default: {f.default})" if f.default not in ("", dataclasses.MISSING) else ""
        if types[f.name] is bool:
            options = dict(nargs="?", const="true", metavar="BOOL")
        elif typing.get_origin(types[f.name]) is list:
            options = dict(nargs="+", metavar="VALUE")
        else:
            options = dict(metavar="VALUE")
        group.add_argument(f"--{f.name.replace('_', '-')}", dest=f.name, default=None,
                           help=f.metadata.get("help", "") + default, **options)


def _parser() -> argparse.ArgumentParser:
    from meap.config import DemoConfig, PretrainConfig, SFTConfig, SFTDemoConfig

    from meap import __version__

    parser = argparse.ArgumentParser(prog="meap", description="Mask-Enhanced Autoregressive Prediction (MEAP).",
                                     allow_abbrev=False)
    parser.add_argument("--version", action="version", version=f"meap {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    for name, config_cls, text in (("pretrain", PretrainConfig, "pretrain a model with MEAP (or the NTP baseline)"),
                                   ("sft", SFTConfig, "fine-tune a causal LM with MEAP-SFT (or the NTP baseline)")):
        training = commands.add_parser(name, help=text, allow_abbrev=False)
        training.add_argument("--config", help="YAML recipe (see configs/)")
        existing = training.add_mutually_exclusive_group()
        existing.add_argument("--resume", action="store_true", help="continue the run in --output from its last checkpoint")
        existing.add_argument("--overwrite", action="store_true", help="replace the run in --output")
        training.add_argument("--no-progress", action="store_true", help="no progress bar")
        _config_flags(training, config_cls)

    demo = commands.add_parser("demo", help="the paired NTP-vs-MEAP experiment on the demo corpus, end to end "
                               "(train both, NIAH, MDQA, attention, report)", allow_abbrev=False)
    demo.add_argument("--config", help="YAML recipe (configs/demo.yaml is the default; configs/repro-small.yaml for a GPU)")
    demo.add_argument("--quick", action="store_true", help="every stage on a few documents and steps (a smoke test)")
    demo.add_argument("--overwrite", action="store_true", help="replace the demo in --output (default: continue it)")
    demo.add_argument("--no-progress", action="store_true", help="no progress bars (stage lines still print)")
    _config_flags(demo, DemoConfig)

    demo_sft = commands.add_parser("demo-sft", help="the paired NTP-SFT vs MEAP-SFT experiment: fine-tune a model "
                                   "both ways at equal tokens, multi-document QA before and after", allow_abbrev=False)
    demo_sft.add_argument("--config", help="YAML recipe (configs/evidence-sft.yaml: the one behind RESULTS.md)")
    demo_sft.add_argument("--overwrite", action="store_true", help="replace the run in --output (default: continue it)")
    demo_sft.add_argument("--no-progress", action="store_true", help="no progress bars (stage lines still print)")
    _config_flags(demo_sft, SFTDemoConfig)

    prepare = commands.add_parser("prepare", help="tokenise local corpora into packed token shards",
                                  allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    prepare.add_argument("inputs", nargs="+", help="text files, directories, globs, JSONL/JSON, Parquet, a saved "
                                                   "`datasets` dataset, or `builtin`")
    prepare.add_argument("--output", "-o", required=True, help="directory to write the shards into")
    source = prepare.add_mutually_exclusive_group()
    source.add_argument("--tokenizer", help="local Hugging Face tokenizer directory, or `gpt2` (packaged; default)")
    source.add_argument("--train-tokenizer", type=int, metavar="VOCAB_SIZE",
                        help="train a byte-level BPE of this many tokens on the corpus")
    prepare.add_argument("--merge-digits", action="store_true",
                         help="with --train-tokenizer: let numbers merge into multi-digit tokens (GPT-2's way) "
                              "instead of one token per digit")
    prepare.add_argument("--text-field", default="text", help="field holding the text in JSONL/JSON/Parquet/datasets")
    prepare.add_argument("--val-fraction", type=float, default=0.005, help="share of the corpus held out")
    prepare.add_argument("--num-proc", type=int, default=None, help="tokeniser processes (default: CPUs, at most 8)")
    prepare.add_argument("--overwrite", action="store_true", help="replace an existing prepared directory")

    commands.add_parser("presets", help="list the model presets")
    _eval_parsers(commands.add_parser("eval", help="evaluate a model (NIAH, multi-document QA, lm-eval)"))
    _data_parsers(commands.add_parser("data", help="make evaluation data"))
    _analyze_parsers(commands.add_parser("analyze", help="look inside models (attention)"))
    compare = commands.add_parser("compare", help="a report comparing runs (curves, evaluations, configs)",
                                  allow_abbrev=False)
    compare.add_argument("runs", nargs="+", help="run directories (evaluation outputs inside them are found)")
    compare.add_argument("--output", "-o", required=True, help="directory for report.md, report.html and plots")
    return parser


def _analyze_parsers(parser: argparse.ArgumentParser) -> None:
    analyses = parser.add_subparsers(dest="analysis", required=True)
    attention = analyses.add_parser("attention", help="attention from the query onto the needle, entropy, and "
                                    "the masked-key score decay (the MEAP paper's analysis)", allow_abbrev=False,
                                    formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    attention.add_argument("--model", required=True, nargs="+",
                           help="one or more: Hugging Face model directories, meap run directories, `smollm2-135m`")
    attention.add_argument("--output", "-o", required=True, help="directory for attention.json and the plots")
    attention.add_argument("--samples", type=int, default=8, help="probes (needle inputs) per model")
    attention.add_argument("--length", type=int, default=1024, help="probe length in model tokens")
    attention.add_argument("--haystack", nargs="+", default=["builtin"],
                           help="text files, `builtin` (Paul Graham essays) or `builtin-prose`")
    attention.add_argument("--mask-ratio", type=float, default=0.15, help="context share masked in the masked copy")
    attention.add_argument("--seed", type=int, default=0)


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
    model_help = "a Hugging Face model directory, a meap run directory, or `smollm2-135m` (packaged)"
    niah = evals.add_parser("niah", help="needle in a haystack", allow_abbrev=False,
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    niah.add_argument("--model", required=True, help=model_help)
    niah.add_argument("--output", "-o", required=True, help="directory for results.jsonl, summary.json, heatmap.png")
    niah.add_argument("--haystack", nargs="+", default=["builtin"],
                      help="text files, `builtin` (Paul Graham essays) or `builtin-prose` (public-domain prose)")
    niah.add_argument("--lengths", type=_csv(int), default=[512, 1024, 2048], help="prompt lengths in model tokens")
    niah.add_argument("--depths", type=_csv(float), default=[0, 25, 50, 75, 100], help="needle depths in percent")
    niah.add_argument("--needle", help="a fixed needle sentence (default: random RULER-style needles)")
    niah.add_argument("--question", help="the question for --needle")
    niah.add_argument("--answer", help="the expected answer for --needle")
    niah.add_argument("--samples", type=int, default=1, help="needles per cell")
    niah.add_argument("--distractors", type=int, default=0,
                      help="other needles (other keys and values) in each haystack: RULER's multi-key NIAH")
    niah.add_argument("--absent", action="store_true",
                      help="control: leave the asked needle out (only distractors remain); summary.json then "
                           "says how often a distractor's value was given")
    niah.add_argument("--seed", type=int, default=0)
    niah.add_argument("--batch-size", type=int, default=8)
    niah.add_argument("--max-new-tokens", type=int, default=32)

    mdqa = evals.add_parser("mdqa", help="multi-document QA (lost in the middle)", allow_abbrev=False,
                            formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    mdqa.add_argument("--model", required=True, help=model_help)
    mdqa.add_argument("--data", nargs="+", required=True,
                      help="JSONL(.gz) files in the lost-in-the-middle format (`meap data make-mdqa`, or nq-open-*)")
    mdqa.add_argument("--output", "-o", required=True, help="directory for results.jsonl, summary.json, mdqa.png")
    mdqa.add_argument("--limit", type=int, help="examples per file")
    mdqa.add_argument("--batch-size", type=int, default=8)
    mdqa.add_argument("--max-new-tokens", type=int, default=32)

    harness = evals.add_parser("harness", help="lm-evaluation-harness tasks", allow_abbrev=False,
                               formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    harness.add_argument("--model", required=True, help=model_help)
    harness.add_argument("--tasks", type=_csv(str), required=True, help="comma-separated lm-eval task names")
    harness.add_argument("--output", "-o", required=True, help="directory for results.json")
    harness.add_argument("--num-fewshot", type=int, default=0)
    harness.add_argument("--limit", type=int, help="examples per task")
    harness.add_argument("--include-path", help="directory of local lm-eval task definitions (offline data)")
    harness.add_argument("--batch-size", type=int, default=8)
    for evaluation in (niah, mdqa, harness):
        evaluation.add_argument("--dtype", default="auto", help=DTYPE_HELP)


def _data_parsers(parser: argparse.ArgumentParser) -> None:
    makers = parser.add_subparsers(dest="maker", required=True)
    make = makers.add_parser("make-mdqa", help="synthetic multi-document QA in the lost-in-the-middle format",
                             allow_abbrev=False, formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    make.add_argument("--output", "-o", required=True, help="file to write (.jsonl.gz is gzipped)")
    make.add_argument("--num-docs", type=int, default=20, help="documents per question")
    make.add_argument("--gold-position", type=int, default=0, help="0-based position of the gold document")
    make.add_argument("--passage-words", type=int, default=100, help="words per document (NQ-Open's are about 100)")
    make.add_argument("--examples", type=int, default=100)
    make.add_argument("--seed", type=int, default=0)


def _run_eval(args: argparse.Namespace) -> None:
    if args.evaluation == "niah":
        from meap.eval.niah import Needle, run

        fixed = (args.needle, args.question, args.answer)
        if any(fixed) and not all(fixed):
            raise UserError("--needle, --question and --answer go together")
        summary = run(args.model, args.output, haystack=args.haystack, lengths=args.lengths, depths=args.depths,
                      needle=Needle(*fixed) if all(fixed) else None, samples=args.samples, seed=args.seed,
                      distractors=args.distractors, absent=args.absent, batch_size=args.batch_size, max_new_tokens=args.max_new_tokens, dtype=args.dtype)
        copied = summary["overall"].get("distractor_copied")
        print(f"niah: substring {summary['overall']['substring']:.3f}, ROUGE-1 F {summary['overall']['rouge1_f']:.3f}"
              + (f", distractor copied {copied:.3f}" if copied is not None else "") + f" -> {args.output}")
    elif args.evaluation == "mdqa":
        from meap.eval.mdqa import run

        summary = run(args.model, args.data, args.output, batch_size=args.batch_size,
                      max_new_tokens=args.max_new_tokens, limit=args.limit, dtype=args.dtype)
        print(f"mdqa: best-subspan EM {summary['accuracy']} by gold position "
              f"{summary['accuracy_by_gold_position']} -> {args.output}")
    else:
        from meap.eval.harness import run

        results = run(args.model, args.tasks, args.output, num_fewshot=args.num_fewshot, limit=args.limit,
                      include_path=args.include_path, batch_size=args.batch_size, dtype=args.dtype)
        for task, metrics in results["results"].items():
            shown = ", ".join(f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            print(f"{task}: {shown}")


def _reject_unknown(unknown: list[str], config_cls: type) -> None:
    from meap.config import unknown_option

    flag = next((arg for arg in unknown if arg.startswith("--")), None)
    if flag is None:
        raise UserError(f"unexpected argument {unknown[0]!r}")
    raise unknown_option(flag, config_cls)


def run(argv: list[str]) -> int:
    parser = _parser()
    args, unknown = parser.parse_known_args(argv)
    if args.command == "presets":
        from meap.models import PRESETS

        for name, shape in PRESETS.items():
            print(f"{name:16s} {shape['num_hidden_layers']} layers, d={shape['hidden_size']}, "
                  f"{shape['num_attention_heads']} heads / {shape['num_key_value_heads']} KV, "
                  f"FFN {shape['intermediate_size']}, context {shape['max_position_embeddings']}")
        return 0
    from meap.config import DemoConfig, PretrainConfig, SFTConfig, SFTDemoConfig

    config_cls = {"pretrain": PretrainConfig, "sft": SFTConfig, "demo": DemoConfig,
                  "demo-sft": SFTDemoConfig}.get(args.command)
    if unknown:  # only the training commands take flags beyond the parser's: their config keys
        if config_cls is None:
            parser.error(f"unrecognized arguments: {' '.join(unknown)}")
        _reject_unknown(unknown, config_cls)
    if args.command == "compare":
        from meap.report import compare_runs

        print(f"wrote {compare_runs(args.runs, args.output)} and report.html")
        return 0
    if args.command in ("eval", "data", "analyze"):
        if args.command == "eval":
            _run_eval(args)
        elif args.command == "analyze":
            from meap.eval.attention import run as analyse_attention

            summary = analyse_attention(args.model, args.output, samples=args.samples, length=args.length,
                                        haystack=args.haystack, mask_ratio=args.mask_ratio, seed=args.seed)
            for name, result in summary["models"].items():
                average = result["average"]
                decay = average.get("score_decay")
                print(f"{name}: answer mass {average['segment_mass']['answer']:.3f}, entropy {average['entropy']:.2f}"
                      + (f", score decay {decay:.3f}" if decay is not None else "") + f" -> {args.output}")
        else:
            from meap.data.mdqa import make_mdqa

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
                       val_fraction=args.val_fraction, num_proc=args.num_proc, overwrite=args.overwrite)
        return 0
    from meap.config import load_config
    from meap.train import pretrain, sft

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
    config = load_config(config_cls, args.config, overrides)
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
    except KeyboardInterrupt:
        print("meap: interrupted", file=sys.stderr)
        code = 130
    sys.exit(code)


if __name__ == "__main__":
    main()
