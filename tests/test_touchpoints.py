"""A pin test per entry of meap.touchpoints.TOUCH_POINTS: each fails when the installed transformers,
accelerate, torch or lm-eval changes what meap relies on."""

import inspect
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM, DynamicCache, LlamaConfig, StaticCache, Trainer, TrainingArguments

from meap.eval.generation import CACHE
from meap.touchpoints import PRIVATE_TRAINER_METHODS, TOUCH_POINTS, attention_kernel, is_causal_lm_config

from conftest import tiny_llama


def test_every_touch_point_has_its_pin_test():
    tests = {name for name in dir(sys.modules[__name__]) if name.startswith("test_pin_")}
    assert tests == {f"test_pin_{name}" for name in TOUCH_POINTS}


def test_pin_trainer_private_methods():
    for name, parameters in PRIVATE_TRAINER_METHODS.items():
        method = getattr(Trainer, name, None)
        assert method is not None, f"transformers' Trainer has no {name} any more"
        assert tuple(inspect.signature(method).parameters)[: len(parameters)] == parameters, name


def test_pin_trainer_accelerator_setup(tmp_path):
    args = TrainingArguments(output_dir=str(tmp_path), use_cpu=True, report_to="none", max_steps=1)
    trainer = Trainer(model=tiny_llama(64), args=args)
    assert trainer.is_fsdp_enabled is False  # set, from the state, by the method MeapTrainer extends
    source = inspect.getsource(Trainer.create_accelerator_and_postprocess)
    assert 'self.is_fsdp_enabled = getattr(self.accelerator.state, "fsdp_plugin", None) is not None' in source
    assert "fsdp_plugin_args" in source


def test_pin_accelerate_fsdp_on_cpu():
    from accelerate.state import AcceleratorState, PartialState
    from accelerate.utils import DistributedType

    # AcceleratorState copies PartialState's shared state (distributed_type with it) on every instantiation
    assert "self.__dict__.update(PartialState._shared_state)" in inspect.getsource(AcceleratorState.__init__)
    assert hasattr(PartialState._shared_state, "__setitem__")
    assert {"MULTI_CPU", "FSDP"} <= {member.name for member in DistributedType}
    # and the FSDP2 path keys on the state's type and the plugin's version alone
    assert "self.distributed_type == DistributedType.FSDP" in inspect.getsource(AcceleratorState.is_fsdp2.fget)


def test_pin_attn_implementation():
    config = LlamaConfig(
        vocab_size=64,
        hidden_size=16,
        intermediate_size=32,
        num_hidden_layers=1,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    for kernel in ("eager", "sdpa"):
        assert attention_kernel(AutoModelForCausalLM.from_config(config, attn_implementation=kernel)) == kernel


def test_pin_causal_lm_mapping():
    from transformers import ViTConfig

    assert is_causal_lm_config(LlamaConfig()) and not is_causal_lm_config(ViTConfig())


def test_pin_cache_layers():
    model = tiny_llama(64)
    ids = torch.tensor([[1, 2, 3, 4]])
    cache = DynamicCache()
    model(input_ids=ids, **{CACHE: cache}, use_cache=True)
    pairs = [(layer.keys[:, :, :2], layer.values[:, :, :2]) for layer in cache.layers]
    rebuilt = DynamicCache(pairs)
    assert [layer.keys.shape[2] for layer in rebuilt.layers] == [2] * len(pairs)
    static = StaticCache(config=model.config, max_cache_len=8)
    for layer, (keys, values) in zip(static.layers, pairs):
        layer.update(keys, values)
    assert len(static.layers) == model.config.num_hidden_layers
    cache.crop(-2)  # what the shared-context probe scoring rewinds by after each candidate
    assert [layer.keys.shape[2] for layer in cache.layers] == [2] * len(pairs) and cache.get_seq_length() == 2


@pytest.mark.parametrize("found_inf, moves", [(1.0, False), (0.0, True)])
def test_pin_fused_adamw_found_inf(found_inf, moves):
    weight = torch.nn.Parameter(torch.ones(4))
    optimizer = torch.optim.AdamW([weight], lr=0.1, fused=True)
    weight.grad = torch.ones(4)
    optimizer.found_inf = torch.tensor(found_inf)
    optimizer.step()
    assert (not torch.equal(weight.detach(), torch.ones(4))) is moves


def test_pin_trainer_loss_normalisation():
    source = inspect.getsource(Trainer.compute_loss)
    assert "self.args.average_tokens_across_devices" in source and "self.model_accepts_loss_kwargs" in source
    assert "self.accelerator.num_processes" in source


def test_pin_lm_eval_globals():
    import datasets.config
    import huggingface_hub.constants
    import lm_eval.api.model
    import lm_eval.api.task
    import lm_eval.evaluator
    import lm_eval.models.huggingface

    for module in (lm_eval.api.task, lm_eval.api.model, lm_eval.models.huggingface):
        assert callable(module.tqdm), module.__name__
    assert callable(lm_eval.evaluator.get_git_commit_hash)
    for module, name in (
        (huggingface_hub.constants, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_HUB_OFFLINE"),
        (datasets.config, "HF_DATASETS_OFFLINE"),
    ):
        assert isinstance(getattr(module, name), bool), (module.__name__, name)
