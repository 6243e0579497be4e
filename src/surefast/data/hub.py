"""Hugging Face hub datasets (``hf:org/name[@revision]``), through the optional ``datasets`` package.

``datasets`` is imported only here, only when a hub source is asked for; it honours
``HF_HUB_OFFLINE``, ``HF_DATASETS_OFFLINE``, ``HF_TOKEN`` and ``HF_ENDPOINT`` itself. The config
and split are the task's defaults (:class:`surefast.data.base.HubDefault`), also for a mirror
under another name.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

from surefast.data.base import Record, ResolvedSource, TaskSpec
from surefast.errors import SurefastError

_REPO = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")


def parse_hub(text: str) -> tuple[str, str | None]:
    """``hf:org/name[@revision]`` -> (repo, revision)."""
    repo, _, revision = text.removeprefix("hf:").strip().partition("@")
    if not _REPO.match(repo):
        raise SurefastError(f"bad hub dataset id {text!r}", "write hf:org/name or hf:org/name@revision")
    return repo, revision or None


def _datasets() -> Any:
    try:
        import datasets
    except ImportError as exc:
        raise SurefastError(
            "hub dataset ids need the optional `datasets` package, which is not installed",
            "pip install 'surefast[hub]', or pass a local file with --source PATH",
        ) from exc
    return datasets


def hub_source(spec: TaskSpec, text: str) -> ResolvedSource:
    repo, revision = parse_hub(text)
    datasets = _datasets()
    config, split = spec.hub.config, spec.hub.split
    try:
        dataset = datasets.load_dataset(repo, config, split=split, revision=revision)
    except Exception as exc:  # datasets raises many types; the user needs one line
        first = str(exc).splitlines()[0] if str(exc) else ""
        offline = "offline" in first.lower() or "connect" in first.lower() or "resolve" in first.lower()
        hint = (
            (
                "the hub is unreachable or offline mode is on: download the dataset where the hub is reachable, "
                "or pass a local file with --source PATH"
            )
            if offline
            else "check the id, config and split, and HF_TOKEN"
        )
        raise SurefastError(
            f"cannot load hub dataset {repo} [{config or 'default'}/{split}]: {type(exc).__name__}: {first}", hint
        ) from exc
    label = f"hf:{repo}{'@' + revision if revision else ''} [{config or 'default'}/{split}]"
    identity = {
        "hub": repo,
        "revision": revision or "",
        "config": config or "",
        "split": split,
        "dataset_fingerprint": str(getattr(dataset, "_fingerprint", "")),
    }

    def records() -> Iterator[Record]:
        for index, row in enumerate(dataset):
            yield Record(index, f"{repo} [{split}] row {index}", dict(row))

    return ResolvedSource("hub", label, identity, records)
