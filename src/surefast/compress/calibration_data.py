"""Calibration text -> a deterministic ``[N, S]`` tensor of token ids.

Sources (``CalibrationConfig.source``):

* ``"stdlib"`` (the offline default): the docstrings of a fixed list of Python standard-library
  modules (:data:`CALIBRATION_MODULES`). They are on every machine that runs surefast, are
  English technical prose, and share nothing with the evaluation tasks (MMLU, CosmosQA,
  HellaSwag, HaluEval). A disjoint list, :data:`HELDOUT_MODULES`, gives held-out text for
  perplexity (``heldout_text()``), so calibration and evaluation never see the same text.
* a local ``.txt`` file or folder of ``.txt`` files, or a ``.jsonl`` file (field ``text_field``);
* ``"hf:NAME[:CONFIG]"``: a Hugging Face dataset (needs ``datasets`` and the hub), split ``split``.

Sampling: the text is joined with blank lines, tokenized once, and ``n_samples`` windows of
``seq_len`` tokens are taken at offsets drawn with ``seed`` (no overlap when the text is long
enough; windows wrap around otherwise). Defaults are CPU-friendly (32 x 256); GPU users
typically pass 128 x 512 (GPTQ/AWQ papers use 128 x 2048).
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from surefast.errors import SurefastError

CALIBRATION_MODULES = (
    "argparse",
    "subprocess",
    "typing",
    "collections",
    "pathlib",
    "datetime",
    "decimal",
    "email.message",
    "json",
    "shutil",
    "tarfile",
    "zipfile",
    "logging",
    "unittest.case",
    "http.client",
    "urllib.request",
    "difflib",
    "textwrap",
    "calendar",
    "fractions",
    "statistics",
    "random",
    "string",
    "inspect",
    "dataclasses",
    "functools",
    "itertools",
    "heapq",
    "bisect",
    "csv",
    "configparser",
    "smtplib",
    "pickle",
    "threading",
    "socket",
    "tempfile",
    "optparse",
    "doctest",
    "pydoc",
    "timeit",
    "xml.dom.minidom",
    "codecs",
    "enum",
    "contextlib",
    "os",
    "io",
    "selectors",
    "platform",
)
HELDOUT_MODULES = (
    "ftplib",
    "imaplib",
    "mailbox",
    "shelve",
    "sqlite3",
    "multiprocessing.pool",
    "ssl",
    "glob",
    "locale",
    "gettext",
    "pdb",
    "trace",
    "turtle",
    "xml.etree.ElementTree",
    "html.parser",
    "base64",
    "hashlib",
    "uuid",
    "ipaddress",
    "abc",
    "weakref",
    "copy",
    "pprint",
    "numbers",
    "operator",
    "queue",
    "sched",
    "sysconfig",
    "graphlib",
    "wave",
    "plistlib",
    "lzma",
    "bz2",
    "gzip",
    "filecmp",
)
assert not set(CALIBRATION_MODULES) & set(HELDOUT_MODULES)


@dataclass(frozen=True)
class CalibrationConfig:
    source: str = "stdlib"  # "stdlib", a .txt/.jsonl path or folder, or "hf:NAME[:CONFIG]"
    n_samples: int = 32
    seq_len: int = 256
    seed: int = 0
    split: str = "train"  # hub datasets only
    text_field: str = "text"  # JSONL and hub datasets

    def __post_init__(self) -> None:
        # Checked when the config is made, before any model loads: n_samples=-4 used to take
        # randperm(...)[:-4] (every window but four) and seq_len=0 divided by zero mid-compression.
        for key in ("n_samples", "seq_len"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise SurefastError(
                    f"{key}: expected a whole number of at least 1, got {value!r}",
                    "the default is 32 sequences of 256 tokens",
                )
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise SurefastError(f"seed: expected a whole number, got {self.seed!r}")
        for key in ("source", "split", "text_field"):
            if not isinstance(getattr(self, key), str):
                raise SurefastError(f"{key}: expected text, got {getattr(self, key)!r}")

    def fingerprint(self, tokenizer: Any = None) -> str:
        vocab = getattr(tokenizer, "vocab_size", None)
        name = getattr(tokenizer, "name_or_path", "")
        blob = json.dumps({**asdict(self), "tok": [name, vocab]}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def module_docs(name: str) -> list[str]:
    """The docstrings of a module, its public classes, functions and methods, in sorted order."""
    mod = importlib.import_module(name)
    parts = [inspect.getdoc(mod) or ""]
    for attr, obj in sorted(vars(mod).items()):
        if attr.startswith("_") or getattr(obj, "__module__", None) != mod.__name__:
            continue
        if inspect.isclass(obj) or inspect.isfunction(obj):
            parts.append(inspect.getdoc(obj) or "")
            if inspect.isclass(obj):
                parts += [
                    inspect.getdoc(m) or ""
                    for n, m in sorted(vars(obj).items())
                    if not n.startswith("_") and inspect.isfunction(m)
                ]
    return [p for p in parts if p]


def _docs(modules: tuple[str, ...]) -> list[str]:
    seen: dict[str, None] = {}  # ordered set: inherited docstrings repeat across modules
    for name in modules:
        try:
            seen.update(dict.fromkeys(module_docs(name)))
        except Exception:  # a module missing from a trimmed Python build just contributes nothing
            continue
    return list(seen)


def stdlib_text(modules: tuple[str, ...]) -> str:
    return "\n\n".join(_docs(modules))


def heldout_text() -> str:
    """Held-out English prose for perplexity: docstrings of :data:`HELDOUT_MODULES` that do not
    also occur in the calibration modules (file-like classes share inherited docstrings)."""
    calib = set(_docs(CALIBRATION_MODULES))
    return "\n\n".join(d for d in _docs(HELDOUT_MODULES) if d not in calib)


def load_texts(config: CalibrationConfig) -> list[str]:
    src = config.source
    if src == "stdlib":
        return [stdlib_text(CALIBRATION_MODULES)]
    if src.startswith("hf:"):
        return _hub_texts(src[3:], config)
    path = Path(src).expanduser()
    if path.is_dir():
        files = sorted(path.rglob("*.txt"))
        if not files:
            raise SurefastError(f"no .txt files under {path}", "point --calibration at a .txt/.jsonl file or folder")
        return [f.read_text(encoding="utf-8", errors="replace") for f in files]
    if not path.is_file():
        raise SurefastError(
            f"calibration source {src!r} is neither a file, a folder, 'stdlib' nor 'hf:NAME'",
            "use 'stdlib' (offline default), a .txt/.jsonl path, or hf:dataset[:config]",
        )
    if path.suffix == ".jsonl":
        texts = []
        for i, line in enumerate(path.read_text(encoding="utf-8").splitlines()):
            if line.strip():
                row = json.loads(line)
                if config.text_field not in row:
                    raise SurefastError(
                        f"{path}:{i + 1} has no field {config.text_field!r}",
                        f"fields: {', '.join(row)}; set text_field",
                    )
                texts.append(str(row[config.text_field]))
        return texts
    return [path.read_text(encoding="utf-8", errors="replace")]


def _hub_texts(name: str, config: CalibrationConfig) -> list[str]:
    try:
        import datasets
    except ImportError as exc:
        raise SurefastError("hub calibration data needs the `datasets` package", "pip install 'surefast[hub]'") from exc
    repo, _, subset = name.partition(":")
    ds = datasets.load_dataset(repo, subset or None, split=config.split)
    return [str(row[config.text_field]) for row in ds.select(range(min(len(ds), 20 * config.n_samples)))]


def tokenize_windows(text: str, tokenizer: Any, n_samples: int, seq_len: int, seed: int = 0) -> torch.Tensor:
    """``n_samples`` windows of ``seq_len`` tokens from ``text`` at seeded offsets: ``[N, S]``."""
    ids = torch.tensor(tokenizer(text, add_special_tokens=False)["input_ids"], dtype=torch.long)  # [T]
    if ids.numel() < seq_len + 1:
        raise SurefastError(
            f"calibration text has {ids.numel()} tokens, fewer than seq_len={seq_len}",
            "use more text or a shorter seq_len",
        )
    gen = torch.Generator().manual_seed(seed)
    slots = ids.numel() // seq_len
    if slots >= n_samples:  # disjoint windows, chosen at random
        starts = torch.randperm(slots, generator=gen)[:n_samples] * seq_len
    else:
        starts = torch.randint(0, ids.numel() - seq_len, (n_samples,), generator=gen)
    return torch.stack([ids[s : s + seq_len] for s in starts.tolist()])


def calibration_ids(config: CalibrationConfig, tokenizer: Any) -> torch.Tensor:
    """The calibration set for ``config`` as token ids ``[n_samples, seq_len]``."""
    if tokenizer is None:
        raise SurefastError("calibration text needs a tokenizer", "pass tokenizer=... or token ids")
    return tokenize_windows("\n\n".join(load_texts(config)), tokenizer, config.n_samples, config.seq_len, config.seed)
