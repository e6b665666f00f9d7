"""Pretraining and fine-tuning on the Hugging Face Trainer: config → data, model, collator → run →
checkpoints → final model.

* :mod:`meap.train.run`: a launch end to end (:func:`pretrain`, :func:`sft`, ``final/``).
* :mod:`meap.train.resume`: claiming the run directory, resuming in it (:func:`launch_config`).
* :mod:`meap.train.build`, :mod:`meap.train.build_sft`: a run's parts, checked before anything is written.
* :mod:`meap.train.arguments`: TrainingArguments, precision, FSDP, integrations and callbacks.
* :mod:`meap.train.trainer`: :class:`MeapTrainer`; :mod:`meap.train.checkpoints`: manifests.

``from meap.train import pretrain, sft, launch_config`` loads torch and transformers only then: the run
directory's torch-free parts (:mod:`meap.train.checkpoints`, :mod:`meap.train.resume`) stay light.
"""

from __future__ import annotations

_EXPORTS = {"pretrain": "meap.train.run", "sft": "meap.train.run", "launch_config": "meap.train.resume"}
__all__ = list(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    import importlib

    return getattr(importlib.import_module(_EXPORTS[name]), name)
