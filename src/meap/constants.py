"""Names every part of meap shares, importable without torch (so ``meap --help`` and configs stay light)."""

MASK_TOKEN = "[MASK]"
IGNORE_INDEX = -100  # label value cross-entropy skips (PyTorch's and Hugging Face's convention)

OBJECTIVES = ("ntp", "meap")  # the baseline first: comparisons are each arm minus it
DEFAULT_MASK_RATIO = 0.15  # the paper's pretraining ratio (its fine-tuning uses 0.1, set in the SFT recipes)
# The onset of a skill: where the trailing moving average of this many probe scores first reaches this share
ONSET_THRESHOLD, ONSET_WINDOW = 0.5, 3
MASK_MODES = ("exact", "bernoulli", "reference")  # how many positions a sequence masks: see masking.mask_inputs


def mask_ratio_problem(ratio: float, *, zero: bool = True) -> str | None:
    """What is wrong with a mask ratio, or None: the one range, [0, 1) (``zero=False``: (0, 1), where a
    ratio must mask), stated for the library's errors and the configs' problems alike."""
    if (0.0 <= ratio < 1.0) if zero else (0.0 < ratio < 1.0):
        return None
    return f"expected a value in {'[0' if zero else '(0'}, 1), got {ratio}"


SFT_LAYOUTS = ("concat", "separate")  # MEAP-SFT: the masked copy in the same row, or a row of its own
SFT_FORMATS = ("alpaca", "sharegpt", "messages", "prompt-completion")
PACKED_ATTENTION = ("sdpa", "eager", "flash_attention_2")  # kernels the collators can isolate packed rows for
DTYPES = ("auto", "float32", "bfloat16", "float16")  # `auto`: bf16 on CUDA, float32 on CPU
MDQA_DISTRACTORS = ("hard", "filler")  # synthetic MDQA: distractors with facts of the gold one's shape, or prose
# How an experiment computes on CPU: the same kernels on every x86 CPU with AVX2 (so a fresh clone repeats the
# committed numbers), or each CPU's fastest (meap.experiments.runner.pin_numerics)
NUMERICS = ("portable", "native")
REPORT_TO = ("tensorboard", "wandb", "mlflow", "none")
