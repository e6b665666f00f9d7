"""The private or undocumented parts of transformers, accelerate, torch and lm-eval that meap relies on, in
one place: :data:`TOUCH_POINTS` names each and where meap uses it, and tests/test_touchpoints.py holds a pin
test per entry that fails when an installed release changes it, so a new release breaks a test, not a
user's run. Where a public API covers a need (``from_config(..., attn_implementation=...)``, the Trainer's
``train_sampling_strategy``), meap uses that instead. Imports nothing from meap; libraries lazily."""

from __future__ import annotations

TOUCH_POINTS = {
    "trainer_private_methods": "MeapTrainer overrides Trainer._get_output_dir and Trainer._save_checkpoint "
    "(checkpoints staged, then renamed into place), and Trainer._issue_warnings_after_load (no warning for "
    "a tied weight a checkpoint leaves out): PRIVATE_TRAINER_METHODS",
    "trainer_accelerator_setup": "MeapTrainer extends Trainer.create_accelerator_and_postprocess, which sets "
    "Trainer.is_fsdp_enabled from the accelerator state's fsdp_plugin",
    "accelerate_fsdp_on_cpu": "shard_on_cpu_processes: the FSDP type in AcceleratorState and in "
    "PartialState._shared_state, which every later AcceleratorState() copies",
    "attn_implementation": "config._attn_implementation names a loaded model's attention kernel: "
    "attention_kernel (packing, attention analysis, retrieval probes)",
    "causal_lm_mapping": "transformers.models.auto.modeling_auto.MODEL_FOR_CAUSAL_LM_MAPPING tells causal LM "
    "configs apart: is_causal_lm_config",
    "cache_layers": "DynamicCache built from (keys, values) pairs and StaticCache(config, max_cache_len) with "
    ".layers[i].keys, .values and .update: meap.eval.generation's batched prefill; DynamicCache.crop: "
    "probe candidates scored on one shared context (meap.probes)",
    "fused_adamw_found_inf": "a fused torch AdamW skips its step while optimizer.found_inf is nonzero (the "
    "GradScaler protocol): MeapTrainer's NaN guard decides on the device",
    "trainer_loss_normalisation": "Trainer.compute_loss scales the loss by the number of processes when "
    "average_tokens_across_devices and model_accepts_loss_kwargs: the chunked loss "
    "does the same",
    "lm_eval_globals": "lm-eval and hub module attributes meap swaps for a run: tqdm in lm_eval.api.task, "
    "lm_eval.api.model and lm_eval.models.huggingface, lm_eval.evaluator.get_git_commit_hash, "
    "the offline switches of huggingface_hub.constants and datasets.config",
}

# Private Trainer methods MeapTrainer overrides (no public hook does their job), with the parameters it relies on.
PRIVATE_TRAINER_METHODS = {
    "_get_output_dir": ("self", "trial"),  # checkpoints are written into a staging directory...
    "_save_checkpoint": ("self", "model", "trial"),  # ...then given a manifest and renamed into place
    "_issue_warnings_after_load": ("self", "load_result"),  # a resumed tied model is not missing a weight
}


def cache_argument() -> str:
    """The name under which a causal LM's forward takes and returns its KV cache: transformers renamed
    ``past_key_values`` to ``cache`` after 5.17, and later versions take the old name with a warning."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    return "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


def attention_kernel(model) -> str:
    """The attention implementation a loaded model runs (``sdpa`` when it does not say)."""
    return getattr(model.config, "_attn_implementation", None) or "sdpa"


def is_causal_lm_config(config) -> bool:
    """Whether transformers has a causal-LM class for this config (without loading one)."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING

    return type(config) in MODEL_FOR_CAUSAL_LM_MAPPING


def shard_on_cpu_processes(accelerator, plugin_args: dict) -> bool:
    """Make ``accelerator`` take accelerate's own FSDP2 path on CPU processes (gloo); True if it now does.

    accelerate honours an FSDP plugin only on accelerator devices; on CPU processes its state keeps
    ``MULTI_CPU`` and the model would be wrapped in DDP. FSDP2 itself (``fully_shard``) works on CPU, so the
    state is switched to FSDP with the plugin the Trainer built from its arguments: from here on the model,
    optimizer, checkpoints and ``final/`` go through the same code as on CUDA.
    """
    from accelerate.state import PartialState
    from accelerate.utils import DistributedType, FullyShardedDataParallelPlugin

    state = accelerator.state
    if state.distributed_type != DistributedType.MULTI_CPU:
        return False  # one process: nothing to shard (as accelerate on a single device)
    state.distributed_type = DistributedType.FSDP
    # as AcceleratorState records its own: every later AcceleratorState() copies PartialState's type
    PartialState._shared_state["distributed_type"] = DistributedType.FSDP
    state.fsdp_plugin = FullyShardedDataParallelPlugin(**plugin_args)
    return True
