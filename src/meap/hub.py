"""Hugging Face hub ids (``org/name``) wherever a model or tokenizer is named, resolved as
``from_pretrained`` resolves them: the snapshot in the hub cache (``HF_HUB_CACHE``, else ``HF_HOME/hub``,
else ``~/.cache/huggingface/hub``), downloaded first when online; with ``HF_HUB_OFFLINE=1`` the cache alone.

The result is a plain local directory, so everything downstream treats a hub model like any other model
directory (and ``trust_remote_code`` stays off). The environment is read at each call, not at import.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from meap.errors import UserError, error_summary

# org/name as the hub spells repository ids; a path that exists on disk always wins over this reading.
_HUB_ID = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
# What a causal LM and its tokenizer need: configs, safetensors weights, tokenizer files (no other formats).
MODEL_FILES = ["*.json", "*.safetensors", "*.model", "*.txt", "*.tiktoken", "*.jinja"]
_TRUE = ("1", "true", "yes", "on")


def is_hub_id(spec: str) -> bool:
    return bool(_HUB_ID.fullmatch(str(spec))) and not Path(spec).exists() and ".." not in str(spec)


def cache_dir() -> Path:
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.environ["HF_HUB_CACHE"])
    home = os.environ.get("HF_HOME") or Path.home() / ".cache" / "huggingface"
    return Path(home) / "hub"


def offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in _TRUE


def snapshot(repo_id: str) -> Path:
    """The local directory of hub model ``repo_id`` (downloaded into the cache when online and missing)."""
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    cache = cache_dir()
    try:
        return Path(snapshot_download(repo_id, cache_dir=cache, local_files_only=offline(), allow_patterns=MODEL_FILES))
    except LocalEntryNotFoundError:
        why = "HF_HUB_OFFLINE is set" if offline() else "the hub cannot be reached"
        raise UserError(
            f"{repo_id}: no such local directory, and not in the Hugging Face cache {cache} ({why}); "
            "download it there first, or give a local directory"
        ) from None
    except (RepositoryNotFoundError, GatedRepoError):
        raise UserError(
            f"{repo_id}: no such local directory, and no model the hub lets this machine download "
            "(a typo, a private or a gated repository)"
        ) from None
    except (HfHubHTTPError, OSError, ValueError) as error:
        raise UserError(f"{repo_id}: cannot fetch it from the Hugging Face hub ({error_summary(error)})") from None
