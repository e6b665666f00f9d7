"""CUDA-only checks (skipped on CPU machines and in CI): bf16 training runs and reports MFU."""

import json

import pytest
import torch

from meap.config import PretrainConfig, load_config
from meap.train import pretrain

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_bf16_pretraining_reports_mfu(prepared, tmp_path):
    config = load_config(
        PretrainConfig,
        overrides=dict(
            data=str(prepared),
            output=str(tmp_path / "run"),
            seq_len=64,
            micro_batch_size=8,
            max_steps=6,
            warmup_steps=1,
            log_every=2,
            eval_every=3,
            eval_batches=1,
            save_every=3,
        ),
    )
    run = pretrain(config, progress=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in records if "loss" in r]
    assert trained and all(0 < r["mfu"] < 1 for r in trained)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in trained)


@pytest.mark.parametrize("attention", ["sdpa", "flash_attention_2"])
def test_packed_rows_match_unpacked_rows_on_cuda(attention):
    """Packing on the GPU kernels: the 4D mask (SDPA) and the varlen path (flash-attention, position_ids)."""
    import importlib.util

    from conftest import tiny_llama
    from sft_cases import collator, per_row_token_losses, samples

    if attention == "flash_attention_2" and importlib.util.find_spec("flash_attn") is None:
        pytest.skip("flash-attn is not installed")
    model = tiny_llama(100, hidden=64).to("cuda", torch.bfloat16).eval()
    model.config._attn_implementation = attention
    unpacked = collator(max_length=400)(samples())
    packed = collator(max_length=400, packing=True, packed_attention=attention)(
        [{"pack": samples([0, 1])}, {"pack": samples([2, 3])}]
    )
    to_cuda = lambda batch: {k: v.to("cuda") for k, v in batch.items()}  # noqa: E731
    expected = per_row_token_losses(model, to_cuda(unpacked))
    got = per_row_token_losses(model, to_cuda(packed))
    for want, have in zip(expected, got, strict=True):
        torch.testing.assert_close(have, want, rtol=0.05, atol=0.05)  # bf16 kernels differ in summation order
