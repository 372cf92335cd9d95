"""Great Expectations (1.x) suites of the split stage: per-file checks, dataset-level checks, Data Docs."""

from __future__ import annotations

import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from pipeline.config import SILENCE_LABEL
from pipeline.data.background import SETS
from pipeline.errors import DataError
from pipeline.fileio import atomic_dir, write_json

SITE = "kws_site"
MAX_LINES = 20  # failure lines per expectation; the rest are counted in one more line
COMPLETE = {"result_format": "COMPLETE"}
_STATE: dict[str, Any] = {}  # the one ephemeral context and its pandas data source, created on first use
_BATCHES: dict[str, Any] = {}  # one whole-dataframe batch definition per suite name


@dataclass
class FileCheck:
    """What every decoded clip must satisfy before it may enter a set."""

    sample_rate: int
    max_ms: float  # longest clip, in time: a 1 s clip at 44.1 kHz is as long as one at 16 kHz
    min_rms: float
    silence_label: str = SILENCE_LABEL


@dataclass
class SetCheck:
    """Outcome of the dataset-level suites."""

    success: bool
    failures: list[str] = field(default_factory=list)
    results: list = field(default_factory=list)


def _context() -> Any:
    """The module's ephemeral GX context: analytics and progress bars off, nothing on disk or network."""
    if "context" not in _STATE:
        os.environ["GX_ANALYTICS_ENABLED"] = "false"
        import great_expectations as gx
        from great_expectations.data_context.types.base import ProgressBarsConfig

        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False, metric_calculations=False)
        _STATE["context"] = context
        _STATE["source"] = context.data_sources.add_pandas("kws")
    return _STATE["context"]


def _validate(name: str, frame: pd.DataFrame, expectations: list) -> Any:
    """Validate `frame` against a (re)built suite `name`; COMPLETE results, stored in the context."""
    import great_expectations as gx

    context = _context()
    if name not in _BATCHES:
        _BATCHES[name] = _STATE["source"].add_dataframe_asset(name).add_batch_definition_whole_dataframe("all")
    suite = gx.ExpectationSuite(name=name)
    for expectation in expectations:
        suite.add_expectation(expectation)
    suite = context.suites.add_or_update(suite)
    definition = context.validation_definitions.add_or_update(
        gx.ValidationDefinition(name=name, data=_BATCHES[name], suite=suite)
    )
    result = definition.run(batch_parameters={"dataframe": frame}, result_format=COMPLETE)
    for outcome in result.results:
        info = outcome.exception_info or {}
        errors = [info] if "raised_exception" in info else [v for v in info.values() if isinstance(v, dict)]
        message = next((e.get("exception_message") for e in errors if e.get("raised_exception")), None)
        if message:
            raise DataError(f"validation suite {name!r}: {outcome.expectation_config.type} could not run: {message}")
    return result


def _column(result: Any) -> str:
    kwargs = result.expectation_config.kwargs
    return kwargs.get("column") or f"{kwargs.get('column_A')}, {kwargs.get('column_B')}"


def _unexpected_rows(result: Any) -> list[int]:
    return [int(i) for i in result.result.get("unexpected_index_list") or []]


def _file_reasons(check: FileCheck) -> dict[str, Callable[[Any], str]]:
    """One human-readable reason per checked column, from the offending value."""

    def channels(n: int) -> str:
        return "stereo (2 channels), expected mono" if n == 2 else f"{n} channels, expected mono"

    def bits(n: int) -> str:
        return "unknown sample format, expected 16-bit" if n == 0 else f"{n}-bit, expected 16-bit"

    def length(n: int, rate: int) -> str:
        if n < 1:
            return "length 0 samples, expected at least 1"
        return f"length {n} samples ({n / rate:.3f} s), expected at most {check.max_ms / 1000:g} s"

    return {
        "sample_rate": lambda v: f"sample rate {v} Hz, expected {check.sample_rate}",
        "channels": channels,
        "bits": bits,
        "original_length": length,
        "rms": lambda v: f"silent: rms {v:.4f} < {check.min_rms:g}",
    }


_CHECK_NAMES = {"sample_rate": "sample_rate", "channels": "channels", "bits": "bits", "duration_ms": "duration", "rms": "silent"}


def check_files(candidates: pd.DataFrame, check: FileCheck) -> pd.DataFrame:
    """Per-file expectations; a [path, check, reason] row for every clip that fails any of them.

    `check` names the failed expectations (`sample_rate`, `channels`, `bits`, `duration`, `silent`, joined by '+').
    """
    if candidates.empty:
        return pd.DataFrame({"path": [], "check": [], "reason": []}, dtype=str)
    import great_expectations.expectations as gxe
    from great_expectations.expectations.row_conditions import Column

    frame = candidates.reset_index(drop=True)
    frame["duration_ms"] = frame["original_length"] * 1000.0 / frame["sample_rate"].where(frame["sample_rate"] > 0, 1)
    result = _validate(
        "files",
        frame,
        [
            gxe.ExpectColumnValuesToBeInSet(column="sample_rate", value_set=[check.sample_rate]),
            gxe.ExpectColumnValuesToBeInSet(column="channels", value_set=[1]),
            gxe.ExpectColumnValuesToBeInSet(column="bits", value_set=[16]),
            gxe.ExpectColumnValuesToBeBetween(column="original_length", min_value=1),
            gxe.ExpectColumnValuesToBeBetween(column="duration_ms", max_value=check.max_ms),
            gxe.ExpectColumnValuesToBeBetween(
                column="rms", min_value=check.min_rms, row_condition=Column("label") != check.silence_label
            ),
        ],
    )
    explain = _file_reasons(check)
    reasons: dict[int, dict[str, str]] = defaultdict(dict)
    for outcome in result.results:
        column = _column(outcome)
        for row in _unexpected_rows(outcome):
            if column in ("original_length", "duration_ms"):  # one duration reason, from either expectation
                length, rate = int(frame.at[row, "original_length"]), int(frame.at[row, "sample_rate"])
                reasons[row]["duration"] = explain["original_length"](length, rate)
                continue
            value = frame.at[row, column]  # int columns arrive as float when a decode failure left NaN beside them
            reasons[row][_CHECK_NAMES[column]] = explain[column](value if column == "rms" else int(value))
    by_path: dict[str, dict[str, str]] = {}
    for row in sorted(reasons):
        by_path.setdefault(frame.at[row, "path"], {}).update(reasons[row])
    return pd.DataFrame(
        {
            "path": list(by_path),
            "check": ["+".join(r) for r in by_path.values()],
            "reason": ["; ".join(r.values()) for r in by_path.values()],
        },
        dtype=str,
    )


def _leak_lines(result: Any, key: str, pairs: pd.DataFrame, paths: pd.DataFrame) -> list[str]:
    """'<key> ... appears in training and testing' for each duplicated value of a uniqueness check."""
    values = list(dict.fromkeys(pairs.loc[_unexpected_rows(result), key]))
    sets = pairs[pairs[key].isin(values)].groupby(key)["set"].agg(set)
    lines = []
    for value in values:
        names = [name for name in SETS if name in sets[value]]
        where = f"{', '.join(names[:-1])} and {names[-1]}"
        if key == "speaker":
            lines.append(f"speaker {value!r} appears in {where}")
        else:
            example = ", ".join(paths.loc[paths["sha256"] == value, "path"].head(3))
            lines.append(f"sha256 {value[:12]}... ({example}) appears in {where}")
    return lines


def _manifest_lines(result: Any, frame: pd.DataFrame, labels: list[str]) -> list[str]:
    """Offending values of the row-level manifest expectations, grouped by value."""
    rows = frame.loc[_unexpected_rows(result)]
    column = _column(result)
    if column == "label":
        counts = rows["label"].value_counts(sort=False)
        return [f"label {v!r} ({n} rows) not in labels {labels}" for v, n in counts.items()]
    if column == "set":
        counts = rows["set"].value_counts(sort=False)
        return [f"set {v!r} ({n} rows) not in {', '.join(SETS)}" for v, n in counts.items()]
    pairs = rows.groupby(["label", "label_index"], sort=False).size()
    position = {label: i for i, label in enumerate(labels)}
    return [
        f"label {lab!r} has label_index {idx}, expected {position.get(lab, 'none')} ({n} rows)"
        for (lab, idx), n in pairs.items()
    ]


def check_sets(manifest: pd.DataFrame, labels: list[str], min_class_count: int) -> SetCheck:
    """Dataset-level expectations: labels, label indices, set names, speaker and audio leakage, class counts."""
    import great_expectations.expectations as gxe

    frame = manifest.reset_index(drop=True)
    position = {label: i for i, label in enumerate(labels)}
    frame["expected_label_index"] = frame["label"].map(position).fillna(-1).astype(int)
    speakers = frame.loc[frame["label"] != SILENCE_LABEL, ["speaker", "set"]].drop_duplicates(ignore_index=True)
    hashes = frame[["sha256", "set"]].drop_duplicates(ignore_index=True)
    counts = pd.crosstab(frame["label"], frame["set"]).reindex(index=labels, columns=list(SETS), fill_value=0)
    counts = counts.rename_axis(index="label", columns=None).reset_index()
    results = [
        _validate(
            "manifest",
            frame,
            [
                gxe.ExpectColumnValuesToBeInSet(column="label", value_set=list(labels)),
                gxe.ExpectColumnPairValuesToBeEqual(column_A="label_index", column_B="expected_label_index"),
                gxe.ExpectColumnValuesToBeInSet(column="set", value_set=list(SETS)),
            ],
        ),
        _validate("speaker_per_set", speakers, [gxe.ExpectColumnValuesToBeUnique(column="speaker")]),
        _validate("sha256_per_set", hashes, [gxe.ExpectColumnValuesToBeUnique(column="sha256")]),
        _validate(
            "class_counts_per_set",
            counts,
            [gxe.ExpectColumnValuesToBeBetween(column=name, min_value=min_class_count) for name in SETS],
        ),
    ]
    failures: list[str] = []
    for suite, frame_of in zip(results, (frame, speakers, hashes, counts), strict=True):
        for outcome in suite.results:
            if outcome.success:
                continue
            name = f"{outcome.expectation_config.type} [{_column(outcome)}]"
            if suite.suite_name == "manifest":
                lines = _manifest_lines(outcome, frame_of, labels)
            elif suite.suite_name == "class_counts_per_set":
                column = _column(outcome)
                lines = [
                    f"label {frame_of.at[row, 'label']!r} has {frame_of.at[row, column]} rows in {column}, "
                    f"expected at least {min_class_count}"
                    for row in _unexpected_rows(outcome)
                ]
            else:
                key = "speaker" if suite.suite_name == "speaker_per_set" else "sha256"
                lines = _leak_lines(outcome, key, frame_of, frame)
            more = [f"... and {len(lines) - MAX_LINES} more"] if len(lines) > MAX_LINES else []
            failures += [f"{name}: {line}" for line in lines[:MAX_LINES] + more]
    return SetCheck(success=all(r.success for r in results) and not failures, failures=failures, results=results)


_OBSERVED = ("observed_value", "element_count", "unexpected_count", "unexpected_percent", "partial_unexpected_list")


def _summary(results: list) -> dict:
    """Overall and per-expectation success with observed values, JSON-ready."""
    suites = []
    for suite in results:
        data = suite.to_json_dict()
        expectations = [
            {
                "expectation": item["expectation_config"]["type"],
                "kwargs": {k: v for k, v in item["expectation_config"]["kwargs"].items() if k != "batch_id"},
                "success": item["success"],
                "observed": {k: item["result"][k] for k in _OBSERVED if k in item["result"]},
            }
            for item in data["results"]
        ]
        suites.append({"suite": suite.suite_name, "success": suite.success, "expectations": expectations})
    return {"success": all(s["success"] for s in suites), "suites": suites}


def build_data_docs(results: list, docs_dir: Path, result_json: Path) -> Path:
    """Write `result_json` and rebuild the HTML Data Docs of `results` into `docs_dir`; return its index.html."""
    from great_expectations import Checkpoint
    from great_expectations.checkpoint import UpdateDataDocsAction
    from great_expectations.checkpoint.checkpoint import CheckpointResult
    from great_expectations.core.run_identifier import RunIdentifier
    from great_expectations.data_context.types.resource_identifiers import (
        ExpectationSuiteIdentifier,
        ValidationResultIdentifier,
    )

    write_json(result_json, _summary(results))
    context = _context()
    docs_dir = Path(docs_dir).resolve()
    with atomic_dir(docs_dir) as tmp:
        site = {
            "class_name": "SiteBuilder",
            "show_how_to_buttons": False,
            "store_backend": {"class_name": "TupleFilesystemStoreBackend", "base_directory": str(tmp)},
            "site_index_builder": {"class_name": "DefaultSiteIndexBuilder"},
        }
        if SITE in (context.config.data_docs_sites or {}):
            context.update_data_docs_site(SITE, site)
        else:
            context.add_data_docs_site(SITE, site)
        run_results = {}
        for result in results:
            run_id = result.meta.get("run_id") or RunIdentifier()
            run_id = run_id if isinstance(run_id, RunIdentifier) else RunIdentifier(**run_id)
            key = ValidationResultIdentifier(
                expectation_suite_identifier=ExpectationSuiteIdentifier(name=result.suite_name),
                run_id=run_id,
                batch_identifier=result.batch_id or "batch",
            )
            context.validation_results_store.set(key, result)
            run_results[key] = result
        names = dict.fromkeys(r.suite_name for r in results)
        checkpoint = Checkpoint(
            name="kws_data_docs",
            validation_definitions=[context.validation_definitions.get(n) for n in names],
            actions=[UpdateDataDocsAction(name="update_data_docs", site_names=[SITE])],
        )
        if run_results:
            result = CheckpointResult(run_id=RunIdentifier(), run_results=run_results, checkpoint_config=checkpoint)
            checkpoint._run_actions(result)  # Checkpoint.run would validate again; these results exist already
        else:
            context.build_data_docs(site_names=[SITE], resource_identifiers=[])
    return docs_dir / "index.html"
