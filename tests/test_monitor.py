"""Throughput accounting: the MFU formula and the per-device peak table (no GPU needed)."""

import pytest

from meap.monitor import flops_per_token, peak_flops, peak_flops_of


@pytest.mark.parametrize(
    "name, tflops",
    [
        ("NVIDIA H100 80GB HBM3", 989),
        ("NVIDIA H100 PCIe", 756),
        ("NVIDIA H200", 989),
        ("NVIDIA A100-SXM4-80GB", 312),
        ("NVIDIA L4", 121),
        ("NVIDIA L40S", 362),
    ],
)
def test_peak_table_matches_device_names(name, tflops):
    assert peak_flops_of(name) == tflops * 1e12


def test_unknown_device_has_no_peak():
    assert peak_flops_of("Some Future Accelerator") is None


def test_flops_per_token_matches_the_landscape_formula():
    # TinyLlama-1.1B shape: 22 layers, d=2048; 6·N + 12·L·d·T.
    assert flops_per_token(968_884_224, 22, 2048, 2048) == 6 * 968_884_224 + 12 * 22 * 2048 * 2048


def test_no_peak_without_cuda():
    import torch

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is present")
    assert peak_flops() is None
