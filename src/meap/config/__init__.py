"""Typed configurations of the commands: dataclass defaults < YAML file < command-line flags.

:mod:`meap.config.training` (pretrain, sft), :mod:`meap.config.commands` (prepare, eval, analyze, data,
compare) and :mod:`meap.config.loading` (YAML and flags into them). Importing this package imports no
torch. The experiments' configs are in :mod:`meap.experiments.config`.
"""

from meap.config.loading import (
    checked,
    coerce,
    config_to_dict,
    field_types,
    load_config,
    save_config,
    saved_config,
    unknown_option,
)
from meap.config.training import PretrainConfig, SFTConfig, TrainingConfig

__all__ = [
    "PretrainConfig",
    "SFTConfig",
    "TrainingConfig",
    "checked",
    "coerce",
    "config_to_dict",
    "field_types",
    "load_config",
    "save_config",
    "saved_config",
    "unknown_option",
]
