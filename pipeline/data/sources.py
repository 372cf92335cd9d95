"""The download stage: materialise every configured source into its own raw folder."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from pipeline.config import LocalSource, Params, Source, SyntheticSource, UrlSource
from pipeline.data.layout import import_tree
from pipeline.errors import DataError
from pipeline.fileio import atomic_dir, write_json

log = logging.getLogger(__name__)


def generate_synthetic(source: SyntheticSource, params: Params, dest: Path, progress: bool = True) -> dict:
    """The whole generated corpus of one synthetic source (espeak voices, neural voices, noises) as one
    Ray Data pipeline (pipeline/data/generate.py): local, in-process or on RAY_ADDRESS's cluster."""
    from pipeline.data.generate import generate_corpus

    words = [*params.data.keywords, *params.data.unknown_words, *params.data.confusable_words]  # espeak says all
    voices, plan = None, None
    if source.piper or source.kokoro_blends:
        from pipeline.data.neural import neural_voices, voice_words

        voices = neural_voices(source.kokoro_blends, params.seed, source.kokoro_male_share)
        voices = voices if source.piper else [v for v in voices if v.engine != "piper"]
        plan = voice_words(voices, params.data.keywords, params.data.unknown_words,
                           source.kokoro_unknown_words, params.seed)  # fmt: skip
    return generate_corpus(source, words, params.seed, dest, params.features.sample_rate,
                           params.features.clip_samples, progress=progress, voices=voices, plan=plan)  # fmt: skip


def _words(params: Params) -> frozenset[str]:
    return frozenset([*params.data.keywords, *params.data.unknown_words, *params.data.confusable_words])


def _fetch_one(source: Source, params: Params, dest: Path, progress: bool) -> dict:
    if isinstance(source, SyntheticSource):
        return generate_synthetic(source, params, dest, progress)
    if isinstance(source, UrlSource):
        from pipeline.data.download import fetch_url_source

        extracted = params.paths.downloads / f"{source.name}.extracted"
        shutil.rmtree(extracted, ignore_errors=True)
        try:
            summary = fetch_url_source(source, params.paths.downloads, extracted, progress=progress)
            summary.update(import_tree(extracted, dest, move=True, words=_words(params)))
        finally:
            shutil.rmtree(extracted, ignore_errors=True)
        return summary
    if isinstance(source, LocalSource):
        if not source.path.is_dir():
            raise DataError(f"data.sources[{source.name}].path: folder {source.path} not found")
        return import_tree(source.path, dest, source.layout, source.background_noise, words=_words(params))
    raise DataError(f"unsupported source kind {source.kind!r}")  # pragma: no cover - union is closed


def fetch_sources(params: Params, progress: bool = True) -> dict[str, dict]:
    """Run every source of `data.sources` into `paths.raw/<name>/`; the whole folder is replaced atomically."""
    results: dict[str, dict] = {}
    with atomic_dir(params.paths.raw) as tmp:
        for source in params.data.sources:
            log.info("source %s (%s)", source.name, source.kind)
            summary = _fetch_one(source, params, tmp / source.name, progress)
            summary = {"kind": source.kind, **summary}
            write_json(tmp / source.name / "source.json", summary)
            results[source.name] = summary
    return results


def describe_import(summary: dict) -> str:
    """One log line for a source's summary: counts, with the skipped and rejected files counted, not listed."""
    lists = {key: len(summary[key]) for key in ("skipped", "rejected") if key in summary}
    shown = {k: v for k, v in summary.items() if k not in lists and k != "neural"}
    if summary.get("neural") and "clips" in shown:  # source.json's `clips` counts the espeak voices' clips only
        shown["clips"] = f"{shown['clips']:,} espeak + {summary['neural']['clips']:,} neural"
    extra = "" if not summary.get("rejected") else f" (rejected files are quarantined by the split stage, e.g. {summary['rejected'][0]})"
    return ", ".join(f"{k} {v}" for k, v in {**shown, **lists}.items()) + extra
