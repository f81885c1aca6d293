"""The Hugging Face hub as a source of models and datasets: can an id be used from here?

Asked once at parse time for every hub id in a config (`model.model_name`, `model.tokenizer_name`,
a dataset's `dataset_name`), so that an unreachable hub or a wrong id is refused in a second, by its
YAML path, rather than after `prepare_model`/`prepare_data` retried for most of a minute. A copy in
the local cache is enough (it is what an offline `from_pretrained`/`load_dataset` reads).
"""

from __future__ import annotations

import os
from pathlib import Path

# Seconds to wait for the hub's answer: a reachable hub answers in well under one.
TIMEOUT_SECONDS = 10


def offline() -> bool:
    """Whether the user switched the hub off (HF_HUB_OFFLINE, or HF_DATASETS_OFFLINE for data)."""
    return any(os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")
               for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"))


def in_cache(repo_id: str, repo_type: str, revision: str | None = None) -> bool:
    """Whether a download of `repo_id` (a model or dataset) is in this machine's cache; of a
    model, at `revision` (a branch, tag or commit; None: the default branch)."""
    from huggingface_hub import constants, try_to_load_from_cache

    if repo_type == "model":
        return isinstance(try_to_load_from_cache(repo_id, "config.json", revision=revision), str)
    folder = "datasets--" + repo_id.replace("/", "--")
    datasets_cache = Path(os.environ.get("HF_DATASETS_CACHE")
                          or Path(constants.HF_HOME) / "datasets")
    return ((Path(constants.HF_HUB_CACHE) / folder).is_dir()
            or (datasets_cache / repo_id.replace("/", "___")).is_dir())


def problem(repo_id: str, repo_type: str, revision: str | None = None) -> str | None:
    """Why `repo_id` (repo_type "model" or "dataset"), at `revision` for a model (None: the default
    branch), cannot be loaded from here, or None.

    Cached: usable. Else the hub is asked (at most TIMEOUT_SECONDS): unreachable, no such
    repository, no such revision, or gated are each said with what to do.
    """
    import huggingface_hub
    from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError

    if in_cache(repo_id, repo_type, revision):
        return None
    local_hint = ("point it at a local directory" if repo_type == "model"
                  else "point it at a local json, jsonl, csv or parquet file")
    what = f"{repo_id!r} at revision {revision!r}" if revision else repr(repo_id)
    if offline():
        return (f"{what} is a hub id, the hub is switched off here (HF_HUB_OFFLINE) and it is "
                f"not in the local cache: download it elsewhere and {local_hint}")
    try:
        if repo_type == "model":
            huggingface_hub.model_info(repo_id, revision=revision, timeout=TIMEOUT_SECONDS)
        else:
            huggingface_hub.dataset_info(repo_id, timeout=TIMEOUT_SECONDS)
    except RevisionNotFoundError:
        return (f"the {repo_type} {repo_id!r} has no revision {revision!r} on the hub: check the "
                "branch, tag or commit")
    except GatedRepoError:
        return (f"{repo_id!r} is gated on the hub: accept its terms on huggingface.co and log in "
                "(`hf auth login`), or " + local_hint)
    except RepositoryNotFoundError:
        return (f"no {repo_type} {repo_id!r} on the Hugging Face hub (or it is private: log in with "
                f"`hf auth login`); check the id, or {local_hint}")
    except Exception as error:  # connection refused, DNS, proxy, timeout: all mean unreachable
        return (f"{what} is a hub id, and the Hugging Face hub cannot be reached from here "
                f"({type(error).__name__}: {str(error)[:200]}) nor is it in the local cache: "
                f"download it where the hub is reachable and {local_hint}")
    return None
