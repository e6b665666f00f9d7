"""The bad-input catalogue of docs/errors.md as data: each case builds its bad input under ``tmp`` and returns
the command line, with the fragments its one-line error must hold. Run in-process by test_errors.py and,
some of them, as processes by test_cli.py (this is not a test module: both import it)."""

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from transformers import AutoTokenizer

from meap.config import PretrainConfig, save_config

from conftest import SHARED_DATA

DOC = Path(__file__).parents[1] / "docs" / "errors.md"


@dataclass(frozen=True)
class Inputs:
    tmp: Path
    prepared: Path  # a prepared corpus (outside tmp)
    model: Path  # a tiny causal LM directory with the GPT-2 tokenizer, 512 positions (inside tmp)


@dataclass(frozen=True)
class Case:
    id: str
    command: Callable[[Inputs], list[str]]
    fragments: tuple[str, ...]


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def jsonl(path: Path, *records) -> Path:
    return write(path, "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))


def t5_dir(inputs: Inputs) -> Path:
    return write(
        inputs.tmp / "t5" / "config.json",
        json.dumps(
            {"model_type": "t5", "vocab_size": 10, "d_model": 8, "num_layers": 1, "num_heads": 1, "d_ff": 8, "d_kv": 8}
        ),
    ).parent


def custom_code_dir(inputs: Inputs) -> Path:
    """A model directory whose config asks for its own Python code, which would leave a file if it ran."""
    directory = inputs.tmp / "custom_code"
    write(
        directory / "config.json",
        json.dumps(
            {
                "model_type": "custom",
                "vocab_size": 10,
                "auto_map": {"AutoConfig": "modeling.CustomConfig", "AutoModelForCausalLM": "modeling.CustomModel"},
            }
        ),
    )
    write(directory / "modeling.py", f"open({str(inputs.tmp / 'code-ran')!r}, 'w').close()\n")
    return directory


def long_mdqa(inputs: Inputs) -> Path:
    """Multi-document QA whose every prompt (10 documents of ~100 words) exceeds the tiny model's 512 positions."""
    from meap.config.commands import MakeMDQAConfig
    from meap.eval.mdqa_data import make_mdqa

    return make_mdqa(MakeMDQAConfig(output=str(inputs.tmp / "long.jsonl.gz"), num_docs=10, examples=2))


KV_FILE = SHARED_DATA / "lost-in-the-middle" / "kv-retrieval-75_keys.jsonl.gz"


def kv(inputs: Inputs, data: Path, *flags: str) -> list[str]:
    return [
        "eval",
        "kv-retrieval",
        "--model",
        str(inputs.model),
        "--data",
        str(data),
        "-o",
        str(inputs.tmp / "out"),
        *flags,
    ]


XSUM_FILE = SHARED_DATA / "xsum" / "xsum-1000.jsonl.gz"


def hallucination(inputs: Inputs, data: Path, *flags: str) -> list[str]:
    return ["eval", "hallucination", "--data", str(data), "-o", str(inputs.tmp / "out"), *flags]


def run_dir(inputs: Inputs, config: str = "model: tiny\n") -> Path:
    return write(inputs.tmp / "run" / "config.yaml", config).parent


def saved_run(inputs: Inputs) -> Path:
    """A run directory as `meap pretrain` leaves it after its first checkpoint (config and checkpoint dir)."""
    run = inputs.tmp / "run"
    (run / "checkpoints" / "step-2").mkdir(parents=True)
    save_config(PretrainConfig(data=str(inputs.prepared), output=str(run)), run / "config.yaml")
    return run


def good_sft(inputs: Inputs) -> Path:
    return jsonl(inputs.tmp / "good.jsonl", {"instruction": "Say it.", "output": "It."})


def strict_template_model(inputs: Inputs) -> Path:
    strict = inputs.tmp / "strict-template"
    shutil.copytree(inputs.model, strict)
    tokenizer = AutoTokenizer.from_pretrained(strict)
    tokenizer.chat_template = "{{ raise_exception('roles must alternate user/assistant') }}"
    tokenizer.save_pretrained(strict)
    return strict


def run_on_re_prepared_data(inputs: Inputs) -> Path:
    """A run with an intact checkpoint whose data directory was then prepared again with another tokenizer."""
    from meap.config.commands import PrepareConfig
    from meap.data.prepare import prepare_corpus
    from meap.train import pretrain as train

    data, run = inputs.tmp / "data", inputs.tmp / "run"
    shutil.copytree(inputs.prepared, data)
    train(
        PretrainConfig(
            data=str(data),
            output=str(run),
            seq_len=32,
            micro_batch_size=2,
            max_steps=2,
            save_every=2,
            eval_every=0,
            warmup_steps=1,
        ),
        progress=False,
    )
    shutil.rmtree(run / "final")
    text = write(inputs.tmp / "text.txt", "The quick brown fox jumps over the lazy dog. " * 500)
    prepare_corpus(
        PrepareConfig(inputs=[str(text)], output=str(data), train_tokenizer=300, num_proc=1, overwrite=True),
        progress=False,
    )
    return run


def grown_tokenizer_model(inputs: Inputs) -> Path:
    """A model directory whose tokenizer has a token more than the model has embedding rows."""
    grown = inputs.tmp / "grown"
    shutil.copytree(inputs.model, grown)
    tokenizer = AutoTokenizer.from_pretrained(grown)
    tokenizer.add_tokens(["<|tool|>"])
    tokenizer.save_pretrained(grown)
    return grown


def dataset_repo(inputs: Inputs) -> Path:
    """A dataset repository laid out as on the hub, with a train split whose column is `body`."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    repo = inputs.tmp / "corpus-repo"
    (repo / "data").mkdir(parents=True)
    pq.write_table(pa.table({"body": ["one", "two"]}), repo / "data" / "train-00000-of-00001.parquet")
    return repo


def pretrain(inputs: Inputs, *flags: str) -> list[str]:
    return ["pretrain", "--data", str(inputs.prepared), "--output", str(inputs.tmp / "out"), *flags]


def sft(inputs: Inputs, data: Path, *flags: str, model: Path | None = None) -> list[str]:
    return [
        "sft",
        "--model",
        str(model or inputs.model),
        "--data",
        str(data),
        "--output",
        str(inputs.tmp / "out"),
        *flags,
    ]


def niah(inputs: Inputs, *flags: str, model: Path | None = None) -> list[str]:
    return ["eval", "niah", "--model", str(model or inputs.model), "-o", str(inputs.tmp / "out"), *flags]


def damaged_model(inputs: Inputs) -> Path:
    """A copy of the tiny model whose weights file was cut off halfway (an interrupted copy or download)."""
    directory = inputs.tmp / "damaged-model"
    shutil.copytree(inputs.model, directory)
    weights = directory / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    return directory


def binary_file(inputs: Inputs, name: str) -> Path:
    """Bytes that are neither UTF-8 nor gzip (a model file given where probes were meant)."""
    path = inputs.tmp / name
    path.write_bytes(bytes(range(128, 256)) * 4)
    return path


def corrupt_gzip(inputs: Inputs, name: str) -> Path:
    """A gzip file cut off after its header and first bytes."""
    import gzip

    path = inputs.tmp / name
    path.write_bytes(gzip.compress(b'{"context": "x", "answer": "y"}\n' * 200)[:40])
    return path


CASES = [
    # meap pretrain (and the config loading every training command shares)
    Case(
        "pretrain-unknown-yaml-key",
        lambda i: ["pretrain", "--config", str(write(i.tmp / "r.yaml", "mask_ratoi: 0.1\n"))],
        ("r.yaml", "mask_ratoi", "did you mean `mask_ratio`"),
    ),
    Case(
        "pretrain-invalid-yaml",
        lambda i: ["pretrain", "--config", str(write(i.tmp / "r.yaml", "model: [tiny\n"))],
        ("r.yaml:", "not valid YAML"),
    ),
    Case(
        "pretrain-missing-recipe",
        lambda i: ["pretrain", "--config", str(i.tmp / "nope.yaml")],
        ("nope.yaml", "config file not found"),
    ),
    Case(
        "pretrain-unknown-flag",
        lambda i: pretrain(i, "--micro-batch", "8"),
        ("--micro-batch", "did you mean `--micro-batch-size`"),
    ),
    Case("pretrain-value-out-of-range", lambda i: pretrain(i, "--mask-ratio", "1.0"), ("mask_ratio", "[0, 1)")),
    Case("pretrain-badly-typed-value", lambda i: pretrain(i, "--max-steps", "ten"), ("--max-steps", "expects int")),
    Case(
        "pretrain-missing-data",
        lambda i: ["pretrain", "--data", str(i.tmp / "nope"), "--output", str(i.tmp / "out")],
        ("nope",),
    ),
    Case("pretrain-unknown-preset", lambda i: pretrain(i, "--model", "tinyy"), ("unknown model preset `tinyy`",)),
    Case(
        "pretrain-broken-model-config",
        lambda i: pretrain(i, "--model", str(write(i.tmp / "broken" / "config.json", "{not json").parent)),
        ("broken", "cannot load the model"),
    ),
    Case(
        "pretrain-unknown-attention-kernel",
        lambda i: pretrain(i, "--attn-implementation", "bogus"),
        ("tiny", "cannot load the model"),
    ),
    Case("pretrain-seq-len-above-model", lambda i: pretrain(i, "--seq-len", "4096"), ("seq_len", "4096", "2048")),
    Case(
        "pretrain-trainer-arg-owned",
        lambda i: pretrain(i, "--trainer-arg", "output_dir=x"),
        ("trainer_args", "output_dir", "--output"),
    ),
    Case(
        "pretrain-trainer-arg-unknown",
        lambda i: pretrain(i, "--trainer-arg", "gradient_checkpionting=true"),
        ("trainer_args", "gradient_checkpionting", "did you mean `gradient_checkpointing`"),
    ),
    Case("pretrain-fsdp-one-process", lambda i: pretrain(i, "--fsdp", "true"), ("fsdp", "single process", "torchrun")),
    Case(
        "pretrain-output-holds-a-run",
        lambda i: ["pretrain", "--data", str(i.prepared), "--output", str(run_dir(i))],
        ("already holds a run", "--resume", "--overwrite"),
    ),
    Case(
        "pretrain-output-not-empty",
        lambda i: [
            "pretrain",
            "--data",
            str(i.prepared),
            "--output",
            str(write(i.tmp / "notes" / "a.txt", "x").parent),
        ],
        ("notes", "not empty"),
    ),
    Case("pretrain-resume-without-a-run", lambda i: pretrain(i, "--resume"), ("--resume given but", "holds no run")),
    Case(
        "pretrain-resume-another-config",
        lambda i: ["pretrain", "--data", str(i.prepared), "--output", str(saved_run(i)), "--resume", "--seq-len", "64"],
        ("config.yaml", "different configuration", "seq_len"),
    ),
    Case(
        "pretrain-data-from-another-tokenizer",
        lambda i: pretrain(i, "--model", str(i.model)),
        ("tokenised by another tokenizer than model", "tiny-model", "--tokenizer"),
    ),
    Case(
        "pretrain-resume-another-tokenizer",
        lambda i: ["pretrain", "--output", str(run_on_re_prepared_data(i)), "--resume", "--max-steps", "4"],
        ("run.json", "another tokenizer", "resume with the data or model the run started from"),
    ),
    Case(
        "pretrain-report-to-not-installed",
        lambda i: pretrain(i, "--report-to", "wandb"),
        ("report_to: wandb is not installed", "meap[wandb]"),
    ),
    Case(
        "pretrain-model-override-not-key-value",
        lambda i: pretrain(i, "--model-override", "layers"),
        ("model_override: expected KEY=VALUE items, got 'layers'",),
    ),
    Case(
        "pretrain-missing-model-config",
        lambda i: pretrain(i, "--model-config", str(i.tmp / "nope.json")),
        ("nope.json: no such model config file",),
    ),
    Case(
        "pretrain-unknown-model-override",
        lambda i: pretrain(i, "--model-override", "num_hidden_layrs=3"),
        ("model_override", "`num_hidden_layrs` is no key of the llama config of tiny", "num_hidden_layers"),
    ),
    Case(
        "pretrain-impossible-model-shape",
        lambda i: pretrain(i, "--model-override", "num_key_value_heads=3"),
        ("num_attention_heads 4 is not a multiple of num_key_value_heads 3",),
    ),
    Case(
        "pretrain-model-config-not-a-causal-lm",
        lambda i: pretrain(i, "--model-config", str(t5_dir(i) / "config.json")),
        ("config.json", "a `t5` config, not a causal language model"),
    ),
    # meap prepare
    Case(
        "prepare-unknown-flag",
        lambda i: [
            "prepare",
            str(write(i.tmp / "good.txt", "text")),
            "-o",
            str(i.tmp / "out"),
            "--val-fractoin",
            "0.1",
        ],
        ("unknown option --val-fractoin", "did you mean `--val-fraction`"),
    ),
    Case(
        "prepare-dataset-unknown-split",
        lambda i: ["prepare", f"hf:{dataset_repo(i)}", "--split", "validation", "-o", str(i.tmp / "out")],
        ("hf:", "corpus-repo: cannot load the dataset", 'Unknown split "validation"'),
    ),
    Case(
        "prepare-dataset-without-the-column",
        lambda i: ["prepare", f"hf:{dataset_repo(i)}", "-o", str(i.tmp / "out")],
        ("corpus-repo: split 'train' has no column 'text' (columns: body)", "--text-field"),
    ),
    Case(
        "prepare-dataset-with-other-inputs",
        lambda i: ["prepare", f"hf:{dataset_repo(i)}", str(write(i.tmp / "a.txt", "text")), "-o", str(i.tmp / "out")],
        ("corpus-repo: a dataset input stands alone",),
    ),
    Case(
        "prepare-missing-path",
        lambda i: ["prepare", str(i.tmp / "absent.txt"), "-o", str(i.tmp / "out")],
        ("absent.txt",),
    ),
    Case(
        "prepare-empty-corpus",
        lambda i: ["prepare", str(write(i.tmp / "empty.txt", "  \n")), "-o", str(i.tmp / "out")],
        ("empty.txt",),
    ),
    Case(
        "prepare-not-utf8",
        lambda i: ["prepare", str(i.tmp / "latin1.txt"), "-o", str(i.tmp / "out")],
        ("latin1.txt", "UTF-8"),
    ),
    Case(
        "pretrain-data-is-an-unprepared-file",
        lambda i: [
            "pretrain",
            "--data",
            str(jsonl(i.tmp / "corpus.jsonl", {"text": "ok"})),
            "--output",
            str(i.tmp / "out"),
        ],
        ("corpus.jsonl: a file, not a prepared data directory", "meap prepare"),
    ),
    Case(
        "pretrain-model-and-model-config",
        lambda i: pretrain(i, "--model", "tiny", "--model-config", str(i.model / "config.json")),
        ("--model and --model-config exclude each other",),
    ),
    Case("sft-data-is-a-directory", lambda i: sft(i, i.prepared), ("a directory; meap sft takes instruction files",)),
    Case(
        "sft-control-character-in-a-line",
        lambda i: sft(
            i,
            write(
                i.tmp / "ctl.jsonl", '{"instruction": "ab", "output": "c"}\n{"instruction": "a\x01b", "output": "c"}\n'
            ),
        ),
        ("ctl.jsonl:2: malformed JSON (Invalid control character, at column 19)",),
    ),
    Case(
        "prepare-malformed-jsonl-line",
        lambda i: ["prepare", str(jsonl(i.tmp / "data.jsonl", {"text": "ok"}, "{not json")), "-o", str(i.tmp / "out")],
        ("data.jsonl:2",),
    ),
    Case(
        "prepare-jsonl-without-the-text-field",
        lambda i: [
            "prepare",
            str(jsonl(i.tmp / "data.jsonl", {"text": "ok"}, {"body": "x"})),
            "-o",
            str(i.tmp / "out"),
        ],
        ("data.jsonl:2", "text"),
    ),
    Case(
        "prepare-tokenizer-directory-without-a-tokenizer",
        lambda i: [
            "prepare",
            str(write(i.tmp / "good.txt", "A king.\n")),
            "--tokenizer",
            str(write(i.tmp / "not-a-tokenizer" / "README", "").parent),
            "-o",
            str(i.tmp / "out"),
        ],
        ("not-a-tokenizer", "no tokenizer files"),
    ),
    Case(
        "prepare-vocab-too-small",
        lambda i: [
            "prepare",
            str(write(i.tmp / "good.txt", "A king.\n")),
            "--train-tokenizer",
            "100",
            "-o",
            str(i.tmp / "out"),
        ],
        ("vocab size 100 is too small",),
    ),
    Case(
        "prepare-merge-digits-without-training",
        lambda i: ["prepare", str(write(i.tmp / "good.txt", "A king.\n")), "--merge-digits", "-o", str(i.tmp / "out")],
        ("--merge-digits", "--train-tokenizer"),
    ),
    # meap sft
    Case(
        "sft-unknown-format",
        lambda i: sft(i, good_sft(i), "--format", "dolly"),
        ("format", "alpaca, sharegpt, messages"),
    ),
    Case(
        "sft-missing-field",
        lambda i: sft(
            i,
            jsonl(
                i.tmp / "missing.jsonl", {"instruction": "Say it.", "output": "It."}, {"instruction": "No output here."}
            ),
        ),
        ("missing.jsonl:2", "output"),
    ),
    Case(
        "sft-unknown-role",
        lambda i: sft(
            i,
            write(
                i.tmp / "turns.json",
                json.dumps([{"messages": [{"role": "user", "content": "Hi"}, {"role": "robot", "content": "x"}]}]),
            ),
        ),
        ("turns.json", "item 0", "robot"),
    ),
    Case(
        "sft-empty-answer",
        lambda i: sft(
            i,
            jsonl(
                i.tmp / "empty.jsonl",
                {"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": " "}]},
            ),
        ),
        ("empty.jsonl:1", "empty answer"),
    ),
    Case(
        "sft-negative-min-answer-tokens",
        lambda i: sft(i, good_sft(i), "--min-answer-tokens", "-1"),
        ("min_answer_tokens", ">= 0"),
    ),
    Case("sft-not-a-causal-lm", lambda i: sft(i, good_sft(i), model=t5_dir(i)), ("not a causal language model",)),
    Case("sft-missing-data-file", lambda i: sft(i, i.tmp / "nope.jsonl"), ("nope.jsonl",)),
    Case("sft-max-length-above-model", lambda i: sft(i, good_sft(i), "--max-length", "4096"), ("max_length", "512")),
    Case(
        "sft-tokenizer-larger-than-model",
        lambda i: sft(i, good_sft(i), "--max-length", "256", model=grown_tokenizer_model(i)),
        ("grown", "50258 tokens besides [MASK] but the model embeds only 50257", "not belong to the same model"),
    ),
    Case("sft-unknown-flag", lambda i: sft(i, good_sft(i), "--lora-rank", "8"), ("--lora-rank", "--lora-r")),
    Case(
        "sft-lora-with-fsdp", lambda i: sft(i, good_sft(i), "--lora-r", "8", "--fsdp", "true"), ("lora_r, fsdp", "DDP")
    ),
    Case(
        "sft-chat-template-raises",
        lambda i: sft(i, good_sft(i), "--max-length", "256", model=strict_template_model(i)),
        ("good.jsonl: conversation 0", "roles must alternate"),
    ),
    # meap eval / data
    Case("niah-not-a-causal-lm", lambda i: niah(i, model=t5_dir(i)), ("not a causal language model",)),
    Case(
        "niah-model-with-custom-code",
        lambda i: niah(i, model=custom_code_dir(i)),
        ("custom_code", "contains custom code"),
    ),
    Case(
        "niah-lengths-above-the-haystack",
        lambda i: niah(
            i, "--haystack", str(write(i.tmp / "hay.txt", "A short haystack. Two sentences.\n")), "--lengths", "400"
        ),
        ("--lengths", "haystack"),
    ),
    Case("niah-depth-above-100", lambda i: niah(i, "--depths", "150"), ("--depths", "[0, 100]", "150")),
    Case(
        "pretrain-negative-max-steps",
        lambda i: ["pretrain", "--data", str(i.prepared), "-o", str(i.tmp / "out"), "--max-steps", "-5"],
        ("max_steps: expected a positive integer, got -5",),
    ),
    Case("niah-lengths-above-the-context", lambda i: niah(i, "--lengths", "4096"), ("--lengths", "context of 512")),
    Case("niah-unknown-dtype", lambda i: niah(i, "--dtype", "fp8"), ("--dtype", "bfloat16")),
    Case("niah-float16-on-cpu", lambda i: niah(i, "--dtype", "float16"), ("--dtype float16", "not on a CPU")),
    Case("niah-absent-without-distractors", lambda i: niah(i, "--absent"), ("absent", "distractors")),
    Case(
        "niah-empty-haystack",
        lambda i: niah(i, "--haystack", str(write(i.tmp / "empty.txt", "\n"))),
        ("empty.txt", "empty"),
    ),
    Case(
        "mdqa-malformed-line",
        lambda i: [
            "eval",
            "mdqa",
            "--model",
            str(i.model),
            "--data",
            str(i.tmp / "bad.jsonl.gz"),
            "-o",
            str(i.tmp / "out"),
        ],
        ("bad.jsonl.gz:2",),
    ),
    Case(
        "niah-uncached-hub-id",
        lambda i: niah(i, model="meap-test/not-cached"),
        ("meap-test/not-cached: no such local directory, and not in the Hugging Face cache", "HF_HUB_OFFLINE"),
    ),
    Case(
        "niah-unknown-variant",
        lambda i: niah(i, "--variant", "multi-key"),
        ("--variant: expected one of single, multikey, multivalue, multiquery, reasoning", "'multi-key'"),
    ),
    Case(
        "niah-unknown-value-kind",
        lambda i: niah(i, "--value-kind", "hex"),
        ("--value-kind: expected one of numbers, words, uuids, got 'hex'",),
    ),
    Case(
        "niah-unknown-flag",
        lambda i: niah(i, "--lenghts", "128"),
        ("unknown option --lenghts", "did you mean `--lengths`"),
    ),
    Case(
        "niah-missing-output",
        lambda i: ["eval", "niah", "--model", str(i.model)],
        ("meap eval niah", "required", "--output", "meap eval niah --help"),
    ),
    Case(
        "mdqa-no-prompt-fits",
        lambda i: ["eval", "mdqa", "--model", str(i.model), "--data", str(long_mdqa(i)), "-o", str(i.tmp / "out")],
        ("mdqa: no prompt fits model", "tokens, plus 32 new tokens, and the model has 512 positions"),
    ),
    Case(
        "mdqa-missing-file",
        lambda i: [
            "eval",
            "mdqa",
            "--model",
            str(i.model),
            "--data",
            str(i.tmp / "nope.jsonl.gz"),
            "-o",
            str(i.tmp / "out"),
        ],
        ("nope.jsonl.gz",),
    ),
    Case(
        "kv-retrieval-bad-record",
        lambda i: kv(i, jsonl(i.tmp / "kv.jsonl", {"key": "a", "value": "b"})),
        ("kv.jsonl:1: `ordered_kv_records` is missing or not a list of pairs",),
    ),
    Case(
        "kv-retrieval-asked-pair-absent",
        lambda i: kv(
            i, jsonl(i.tmp / "kv.jsonl", {"ordered_kv_records": [["a", "c"], ["d", "e"]], "key": "a", "value": "b"})
        ),
        ("kv.jsonl:1: the asked pair (`key`, `value`) is not among `ordered_kv_records`",),
    ),
    Case(
        "kv-retrieval-gold-index-beyond-the-pairs",
        lambda i: kv(i, KV_FILE, "--num-pairs", "4", "--gold-index", "0", "4"),
        ("--gold-index: positions must be below --num-pairs 4",),
    ),
    Case(
        "kv-retrieval-prompts-beyond-the-context",
        lambda i: kv(i, KV_FILE, "--limit", "2"),
        ("kv-retrieval: prompts of up to", "plus 100 new ones do not fit the 512 positions", "--num-pairs"),
    ),
    Case(
        "hallucination-no-known-fields",
        lambda i: hallucination(
            i, jsonl(i.tmp / "docs.jsonl", {"body": "Text.", "tldr": "T."}), "--model", str(i.model)
        ),
        ("docs.jsonl:1: no known field pair (its keys: body, tldr)", "--document-field"),
    ),
    Case(
        "hallucination-neither-model-nor-summaries",
        lambda i: hallucination(i, XSUM_FILE),
        ("give --model (the summariser) or --summaries",),
    ),
    Case(
        "hallucination-no-document-fits",
        lambda i: hallucination(
            i, jsonl(i.tmp / "long.jsonl", {"document": "word " * 3000, "summary": "Words."}), "--model", str(i.model)
        ),
        ("hallucination: no document fits the 512 positions", "with 64 new tokens"),
    ),
    Case(
        "hallucination-summary-missing",
        lambda i: hallucination(
            i, XSUM_FILE, "--limit", "2", "--summaries", str(jsonl(i.tmp / "s.jsonl", {"id": "x", "summary": "S."}))
        ),
        ("s.jsonl: no summary for id", "(and 1 more)"),
    ),
    Case(
        "hallucination-judge-unreachable",
        lambda i: hallucination(
            i,
            XSUM_FILE,
            "--limit",
            "1",
            "--summaries",
            str(jsonl(i.tmp / "s.jsonl", {"id": "0", "summary": "S."})),
            "--judge-url",
            "http://127.0.0.1:9/v1",
            "--judge-model",
            "m",
            "--judge-retries",
            "1",
            "--judge-timeout",
            "5",
        ),
        ("judge http://127.0.0.1:9/v1: unreachable after 1 retries",),
    ),
    Case(
        "commonsense-data-not-in-the-cache",
        lambda i: ["eval", "commonsense", "--model", str(i.model), "--tasks", "arc_easy", "-o", str(i.tmp / "out")],
        (
            "commonsense: the data of arc_easy (allenai/ai2_arc, ARC-Easy) are not in the Hugging Face datasets cache",
            "--data-dir DIR with DIR/arc_easy/<split>.jsonl",
        ),
    ),  # fmt: skip
    Case(
        "commonsense-not-a-paper-task",
        lambda i: ["eval", "commonsense", "--model", str(i.model), "--tasks", "mmlu", "-o", str(i.tmp / "out")],
        ("--tasks: mmlu is none of the paper's arc_challenge",),
    ),
    Case(
        "make-mdqa-gold-position-out-of-range",
        lambda i: [
            "data",
            "make-mdqa",
            "--output",
            str(i.tmp / "out.jsonl.gz"),
            "--num-docs",
            "3",
            "--gold-position",
            "5",
        ],
        ("gold_position", "[0, 3)"),
    ),
    Case(
        "harness-no-such-include-path",
        lambda i: [
            "eval",
            "harness",
            "--model",
            str(i.model),
            "--tasks",
            "mytask",
            "--include-path",
            str(i.tmp / "tasks"),
            "-o",
            str(i.tmp / "out"),
        ],
        ("tasks", "--include-path"),
    ),
    # meap analyze / compare / demo
    Case(
        "attention-length-above-the-context",
        lambda i: ["analyze", "attention", "--model", str(i.model), "--length", "4096", "-o", str(i.tmp / "out")],
        ("--length", "4096"),
    ),
    Case(
        "attention-unknown-flag",
        lambda i: ["analyze", "attention", "--model", str(i.model), "-o", str(i.tmp / "out"), "--sample", "2"],
        ("unknown option --sample", "did you mean `--samples`"),
    ),
    Case(
        "attention-missing-model",
        lambda i: ["analyze", "attention", "--model", str(i.tmp / "nope"), "-o", str(i.tmp / "out")],
        ("nope", "no such model directory"),
    ),
    Case(
        "compare-not-a-run",
        lambda i: ["compare", str(run_dir(i)), str(i.tmp / "nope"), "-o", str(i.tmp / "out")],
        ("nope",),
    ),
    Case(
        "generate-top-p-when-greedy",
        lambda i: ["generate", "--model", str(i.model), "--top-p", "0.9", "Hello"],
        ("--top-k/--top-p", "--temperature"),
    ),
    Case(
        "generate-truncated-weights",
        lambda i: ["generate", "--model", str(damaged_model(i)), "Hello"],
        ("damaged-model: cannot load the model",),
    ),
    Case(
        "niah-truncated-weights", lambda i: niah(i, model=damaged_model(i)), ("damaged-model: cannot load the model",)
    ),
    Case(
        "sft-truncated-weights",
        lambda i: sft(i, good_sft(i), model=damaged_model(i)),
        ("damaged-model: cannot load the model",),
    ),
    Case(
        "retrieval-binary-probe-file",
        lambda i: [
            "eval",
            "retrieval",
            "--model",
            str(i.model),
            "--probes",
            str(binary_file(i, "p.jsonl")),
            "-o",
            str(i.tmp / "out"),
        ],
        ("p.jsonl:1", "UTF-8"),
    ),
    Case(
        "pretrain-corrupt-gzip-probe-file",
        lambda i: [
            "pretrain",
            "--data",
            str(i.prepared),
            "--output",
            str(i.tmp / "out"),
            "--probe-file",
            str(corrupt_gzip(i, "p.jsonl.gz")),
            "--probe-every",
            "2",
        ],
        ("p.jsonl.gz: cannot read",),
    ),
    Case(
        "compare-output-is-a-file",
        lambda i: ["compare", str(run_dir(i)), str(run_dir(i)), "-o", str(write(i.tmp / "report.md", "mine\n"))],
        ("report.md: exists and is not a directory",),
    ),
    Case("generate-empty-prompt", lambda i: ["generate", "--model", str(i.model), " "], ("empty prompt",)),
    Case("compare-a-single-run", lambda i: ["compare", str(run_dir(i)), "-o", str(i.tmp / "out")], ("at least two",)),
    Case(
        "demo-unknown-objective",
        lambda i: ["demo", "--objectives", "ntp", "bert", "--output", str(i.tmp / "out")],
        ("objectives", "ntp", "meap"),
    ),
    Case(
        "demo-bad-filler-words",
        lambda i: ["demo", "--filler-words", "50", "10", "--output", str(i.tmp / "out")],
        ("filler_words",),
    ),
    Case(
        "demo-prompts-beyond-the-trained-length",
        lambda i: ["demo", "--quick", "--task", "retrieval", "--train.seq-len", "64", "--output", str(i.tmp / "out")],
        ("probes.jsonl", "more than the 64 the model is trained on"),
    ),
    Case(
        "demo-training-section-not-a-mapping",
        lambda i: ["demo", "--config", str(write(i.tmp / "recipe.yaml", "train: 5\n")), "--output", str(i.tmp / "out")],
        ("recipe.yaml", "`train` expects a mapping"),
    ),
    Case(
        "demo-run-key-in-the-training-section",
        lambda i: ["demo", "--config", str(write(i.tmp / "r.yaml", "train:\n  seed: 3\n")), "-o", str(i.tmp / "o")],
        ("r.yaml", "unknown key `train.seed`", "sets each run's `seed` itself"),
    ),
    Case(
        "demo-repeated-seeds",
        lambda i: ["demo", "--seeds", "1", "1", "--output", str(i.tmp / "out")],
        ("seeds", "distinct"),
    ),
    Case(
        "demo-unknown-numerics",
        lambda i: ["demo", "--numerics", "fast", "--output", str(i.tmp / "out")],
        ("numerics", "portable, native"),
    ),
    Case(
        "recompute-not-a-records-file",
        lambda i: ["experiment", "recompute", str(write(i.tmp / "summary.json", "{}\n"))],
        ("summary.json", "expected a gzipped JSON records file", "Not a gzipped file"),
    ),
    Case(
        "recompute-arm-without-same",
        lambda i: ["experiment", "recompute", str(write(i.tmp / "r.json.gz", "x")), "--arm", "meap-0.15=meap"],
        ("--arm", "MINE=OTHERS", "with --same"),
    ),
    Case(
        "demo-output-holds-something-else",
        lambda i: ["demo", "--quick", "--output", str(write(i.tmp / "notes" / "a.txt", "x").parent)],
        ("notes", "holds no demo"),
    ),
]
