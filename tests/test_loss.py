"""The chunked loss (never all logits at once) equals the model's own loss and gradients, alone and in training."""

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file

from meap.constants import IGNORE_INDEX
from meap.loss import chunked_cross_entropy
from meap.train import pretrain, sft

from conftest import assert_metrics_close, read_metrics, tiny_config


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 1000])
def test_chunked_cross_entropy_equals_the_full_one_with_its_gradients(chunk_size):
    generator = torch.Generator().manual_seed(0)
    hidden = torch.randn(4, 16, 12, generator=generator, requires_grad=True)
    weight = torch.randn(50, 12, generator=generator, requires_grad=True)
    targets = torch.randint(0, 50, (4, 16), generator=generator)
    targets[0, :5] = IGNORE_INDEX
    targets[3, -1] = IGNORE_INDEX

    full = F.cross_entropy((hidden @ weight.t()).reshape(-1, 50), targets.reshape(-1), reduction="sum")
    full_grads = torch.autograd.grad(full, (hidden, weight))
    chunked = chunked_cross_entropy(hidden, weight, targets, chunk_size=chunk_size)
    chunked_grads = torch.autograd.grad(chunked, (hidden, weight))

    assert chunked.item() == pytest.approx(full.item(), rel=1e-6)
    for a, b in zip(chunked_grads, full_grads):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def assert_same_training(first, second):
    assert_metrics_close(read_metrics(first), read_metrics(second), rel=2e-5)
    weights, other = load_file(first / "final" / "model.safetensors"), load_file(second / "final" / "model.safetensors")
    for name in weights:
        torch.testing.assert_close(weights[name], other[name], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("objective", ["ntp", "meap"])
def test_pretraining_with_the_chunked_loss_is_the_same_run(prepared, tmp_path, objective):
    shape = dict(objective=objective, micro_batch_size=2, grad_accum_steps=2, max_steps=4, eval_every=2, save_every=0)
    plain = pretrain(tiny_config(prepared, tmp_path / "plain", **shape), progress=False)
    chunked = pretrain(tiny_config(prepared, tmp_path / "chunked", loss_chunk_size=24, **shape), progress=False)
    assert_same_training(plain, chunked)


def test_fine_tuning_with_the_chunked_loss_is_the_same_run(tiny_model_dir, tmp_path):
    from sft_cases import alpaca, config, write

    data = write(tmp_path / "alpaca.jsonl", [alpaca(i) for i in range(12)])
    plain = sft(config(tiny_model_dir, [data], tmp_path / "plain", max_steps=3), progress=False)
    chunked = sft(config(tiny_model_dir, [data], tmp_path / "chunked", max_steps=3, loss_chunk_size=40), progress=False)
    assert_same_training(plain, chunked)
