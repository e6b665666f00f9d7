"""CUDA-only checks (skipped on CPU machines and in CI): bf16 training runs and reports MFU."""

import json

import pytest
import torch

from meap.config import PretrainConfig, load_config
from meap.train import pretrain

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


def test_bf16_pretraining_reports_mfu(prepared, tmp_path):
    config = load_config(PretrainConfig, overrides=dict(
        data=str(prepared), output=str(tmp_path / "run"), seq_len=64, micro_batch_size=8, max_steps=6,
        warmup_steps=1, log_every=2, eval_every=3, eval_batches=1, save_every=3))
    run = pretrain(config, progress=False)
    records = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    trained = [r for r in records if "loss" in r]
    assert trained and all(0 < r["mfu"] < 1 for r in trained)
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in trained)
