"""The `kws` command line: one typer app; heavy libraries are imported only by the command that needs them."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from pipeline.errors import KwsError
from pipeline.runner import quiet_environment, show_progress

if TYPE_CHECKING:
    from pipeline.config import Params

app = typer.Typer(no_args_is_help=True)
data_app = typer.Typer(help="Generate, fetch and describe datasets.", no_args_is_help=True)
app.add_typer(data_app, name="data")

ParamsOption = Annotated[Path, typer.Option("--params", "-p", help="The params.yaml to use.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable output.")]


@contextlib.contextmanager
def user_errors() -> Iterator[None]:
    """Mistakes a user can fix become one line on stderr and exit code 1, never a traceback."""
    quiet_environment()
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("pipeline").setLevel(logging.INFO)
    try:
        yield
    except KwsError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(1) from None
    except KeyboardInterrupt:
        typer.echo("interrupted: nothing half-written was kept", err=True)
        raise typer.Exit(130) from None


def _params(path: Path) -> Params:
    """params.yaml, validated; imported here so a command that needs none (a .tflite given) never pays for it."""
    from pipeline.config import load_params

    return load_params(path)


def _open_unit_interval(value: float | None) -> float | None:
    if value is not None and not 0 < value < 1:
        raise typer.BadParameter(f"{value} is not in (0, 1)")
    return value


@data_app.command("generate")
def data_generate(
    out: Annotated[Path, typer.Option(help="Folder to write the corpus into (replaced only when complete).")] = Path("data/generated"),
    speakers: Annotated[int | None, typer.Option(min=1, max=5000, help="Voices in all, espeak + neural (default: params.yaml).")] = None,
    repetitions: Annotated[int | None, typer.Option(min=1, max=20, help="Clips per word and speaker.")] = None,
    piper: Annotated[bool | None, typer.Option("--piper/--no-piper", help="Piper's joe voice (default: params.yaml).")] = None,
    kokoro_blends: Annotated[int | None, typer.Option(min=0, max=500, help="Kokoro blends (default: params.yaml; 0: none).")] = None,
    kokoro_male_share: Annotated[float | None, typer.Option(callback=_open_unit_interval, help="Mean weight of the male "
        "Kokoro style in a blend, strictly between 0 and 1 (default: params.yaml; 0.5 balances the sexes).")] = None,  # fmt: skip
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Generate the offline text-to-speech corpus (espeak and neural voices) in the Speech Commands layout.
    Runs on RAY_ADDRESS's Ray cluster when set, else on a local one (KWS_WORKERS=1: in this process)."""
    with user_errors():
        params = _params(params_path)
        from pipeline.config import SyntheticSource
        from pipeline.data.generate import sized_source
        from pipeline.data.sources import generate_synthetic
        from pipeline.fileio import atomic_dir

        base = next((s for s in params.data.sources if isinstance(s, SyntheticSource)), None)
        source = sized_source(base or SyntheticSource(kind="synthetic"), speakers, piper, kokoro_blends)
        if repetitions is not None:
            source = source.model_copy(update={"repetitions": repetitions})
        if kokoro_male_share is not None:
            source = source.model_copy(update={"kokoro_male_share": kokoro_male_share})
            if not source.kokoro_blends:
                typer.echo("warning: --kokoro-male-share has no effect: the corpus has no Kokoro blends", err=True)
        with atomic_dir(out) as tmp:  # an interrupted run leaves no folder that looks complete
            summary = generate_synthetic(source, params, tmp, progress=show_progress())
        typer.echo(json.dumps(summary, indent=2))


@data_app.command("fetch")
def data_fetch(params_path: ParamsOption = Path("params.yaml")) -> None:
    """Run every configured source of `data.sources` into the raw folder (the download stage)."""
    with user_errors():
        params = _params(params_path)
        from pipeline.data.sources import fetch_sources

        for name, summary in fetch_sources(params, progress=show_progress()).items():
            typer.echo(f"{name}: {json.dumps(summary)}")


@data_app.command("info")
def data_info(
    path: Annotated[Path | None, typer.Argument(help="Dataset folder (default: paths.raw).")] = None,
    as_json: JsonOption = False,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Counts per word, speakers, duration and size of a dataset folder."""
    with user_errors():
        from pipeline.data.info import dataset_info

        table = dataset_info(path if path is not None else _params(params_path).paths.raw)
        if as_json:
            typer.echo(table.to_json(orient="records"))
            return
        from rich.console import Console
        from rich.table import Table

        view = Table("source", "word", "clips", "speakers", "seconds", "MB", "unreadable")
        for row in table.itertuples():
            view.add_row(row.source, row.word, str(row.clips), str(row.speakers), f"{row.seconds:.0f}",
                         f"{row.bytes / 1e6:.1f}", str(row.unreadable))  # fmt: skip
        view.add_section()
        view.add_row("all", "", str(table["clips"].sum()), "", f"{table['seconds'].sum():.0f}",
                     f"{table['bytes'].sum() / 1e6:.1f}", str(table["unreadable"].sum()))  # fmt: skip
        Console().print(view)


@app.command("spectrogram")
def spectrogram(
    wav: Annotated[Path, typer.Argument(help="Input audio file (any length, rate and channel count).")],
    png: Annotated[Path, typer.Argument(help="Output PNG.")],
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Draw a whole recording's waveform and the frontend's features (features of params.yaml) to a PNG."""
    with user_errors():
        from pipeline.audio import check_audio_path

        check_audio_path(wav)
        params = _params(params_path)
        from pipeline.features.plot import draw_spectrogram

        drawing = draw_spectrogram(wav, png, params.features)
        for note in drawing.notes:
            _warn(f"{wav}: {note}")
        typer.echo(f"wrote {png}: {drawing.seconds:.2f} s; " + "; ".join(drawing.panels))


ModelOption = Annotated[
    str | None,
    typer.Option("--model", "-m", help="Export folder, SavedModel folder, .tflite/.keras file or models:/NAME@ALIAS "
                 "(default: paths.export of params.yaml)."),  # fmt: skip
]


def _warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


def _load_predictor(model: str | None, params_path: Path):
    """The Predictor `--model` names, checked before anything heavy loads; params.yaml is read only for the default
    export folder and a .keras classifier's frontend."""
    from pipeline.inference import check_model_spec, load_model

    if model:
        check_model_spec(model)
        if not str(model).endswith(".keras"):
            return load_model(model)
    params = _params(params_path)
    if not model:
        export = params.paths.export
        if not (export / "saved_model" / "saved_model.pb").is_file():
            raise KwsError(f"{export}/saved_model: no exported model; run the freeze stage (dvc repro freeze) or pass --model")
        return load_model(export)
    return load_model(model, params.features)


def _version_callback(value: bool) -> None:
    if value:
        from importlib.metadata import PackageNotFoundError, version

        try:
            typer.echo(f"kws {version('kws-pipeline')}")
        except PackageNotFoundError:
            typer.echo("kws (not installed as a package)")
        raise typer.Exit()


@app.callback()
def _main(
    show_version: Annotated[bool, typer.Option("--version", callback=_version_callback, is_eager=True,
                                               help="Print the version and exit.")] = False,  # fmt: skip
) -> None:
    """Train, evaluate, freeze and ship keyword-spotting models."""


@app.command("label-wav")
def label_wav(
    files: Annotated[list[Path], typer.Argument(help="wav (or flac) files, one clip each.")],
    model: ModelOption = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Labels shown per file.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output: a JSON list, one entry per file.")] = False,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Top labels and scores of each file's first clip; other sample rates, stereo and other lengths are converted
    with a warning (only the frames one clip needs are read; `kws stream` scores a whole recording)."""
    failed = 0
    with user_errors():
        import numpy as np

        from pipeline.audio import check_audio_path

        results: dict[Path, dict] = {}
        for path in files:  # files are checked before any model loads
            try:
                check_audio_path(path)
            except KwsError as error:
                typer.echo(f"error: {error}", err=True)
                results[path] = {"file": str(path), "error": str(error)}
                failed += 1
        if failed == len(files):
            raise typer.Exit(1)
        predictor = _load_predictor(model, params_path)
        k = min(top_k, len(predictor.labels))
        for path in files:
            if path in results:
                continue
            try:
                clip = predictor.read(path)
            except KwsError as error:  # one unreadable file does not stop the others
                typer.echo(f"error: {error}", err=True)
                results[path] = {"file": str(path), "error": str(error)}
                failed += 1
                continue
            for note in clip.notes:
                _warn(f"{path}: {note}" + (f"; only the first clip is scored: `kws stream {path}` scores the whole "
                                           "recording" if note.startswith("trimmed") else ""))  # fmt: skip
            scores = predictor.scores(clip.audio[None])[0]
            order = np.argsort(-scores, kind="stable")[:k]
            top = [{"label": predictor.labels[i], "score": round(float(scores[i]), 6)} for i in order]
            results[path] = {"file": str(path), "top": top, "notes": clip.notes, "seconds": round(clip.seconds, 3)}
        rows = [results[path] for path in files]
        if as_json:
            typer.echo(json.dumps(rows, indent=2))
        else:
            from rich.console import Console
            from rich.table import Table

            view = Table("file", *(f"#{i + 1}" for i in range(k)))
            view.columns[0].overflow = "fold"
            for row in rows:
                cells = [f"{t['label']} {t['score']:.3f}" for t in row["top"]] if "top" in row else ["unreadable"]
                view.add_row(row["file"], *cells)
            Console().print(view)
    if failed:
        raise typer.Exit(1)


def _base_settings(params_path: Path):
    """(evaluate.streaming of params.yaml, its path), or (the defaults, "defaults") when there is no params.yaml."""
    from pipeline.config import StreamParams

    return (_params(params_path).evaluate.streaming, str(params_path)) if params_path.is_file() else (StreamParams(), "defaults")


def _stream_settings(base: tuple, predictor, overrides: dict):
    """(settings, where they came from) for streaming `predictor`: the RecognizeCommands settings its model card
    records (those its streaming figures were measured at; checked when the model loaded), else `base`
    (`_base_settings`), and the command line's flags over either. Warns when params.yaml differs from the card on a
    setting no flag gives."""
    from pipeline.config import RECOGNIZE_SETTINGS

    settings, source = base
    if predictor.recognize:
        recorded = settings.model_copy(update=predictor.recognize)
        differ = [key for key in RECOGNIZE_SETTINGS if overrides.get(key) is None and getattr(settings, key) != getattr(recorded, key)]
        if differ and source != "defaults":
            _warn(f"{predictor.path} was evaluated at " + ", ".join(f"{key} {_setting(getattr(recorded, key))}" for key in differ)
                  + f" ({source} says " + ", ".join(_setting(getattr(settings, key)) for key in differ)
                  + "); using the model's: a flag (e.g. --threshold) chooses, re-freezing the model adopts params.yaml's")  # fmt: skip
        missing = [key for key in RECOGNIZE_SETTINGS if key not in predictor.recognize]  # a card from another version
        settings, source = recorded, "model card" + (f" + {source} ({', '.join(missing)})" if missing else "")
    given = {key: value for key, value in overrides.items() if value is not None}
    return settings.model_copy(update=given), source + (" + flags" if given else "")


def _setting(value) -> str:
    """A setting as params.yaml would write it: 500, not 500.0."""
    return f"{value:g}" if isinstance(value, float) else str(value)


class _Progress:
    """`streaming: 40% of 1800.0 s` lines on stderr, one per 10 %, for recordings longer than a minute."""

    def __init__(self, seconds: float, enabled: bool):
        self.seconds, self.enabled, self.next = seconds, enabled, 10

    def __call__(self, done: int, total: int) -> None:
        percent = 100 * done // max(total, 1)
        if self.enabled and percent >= self.next:
            typer.echo(f"streaming: {percent}% of {self.seconds:.1f} s", err=True)
            self.next = (percent // 10 + 1) * 10


ThresholdOption = Annotated[float | None, typer.Option("--threshold", min=0.0, max=1.0,
                            help="Detection threshold (default: the one the model was evaluated at, from its model card; else "
                            "evaluate.streaming.detection_threshold).")]  # fmt: skip
AverageOption = Annotated[float | None, typer.Option("--average-window-ms", min=1.0, help="Averaging window in ms.")]
SuppressionOption = Annotated[float | None, typer.Option("--suppression-ms", min=0.0, help="Quiet time after a detection in ms.")]
CountOption = Annotated[int | None, typer.Option("--minimum-count", min=1, help="Results needed in the window.")]
RearmOption = Annotated[Literal["release", "other_command"] | None, typer.Option(
    "--rearm", help="When a word may be reported again: release (once its score fell to the threshold) or "
    "other_command (TensorFlow's rule: after another command).")]  # fmt: skip


def _stream_overrides(threshold, average_window_ms, suppression_ms, minimum_count, rearm) -> dict:
    return {"detection_threshold": threshold, "average_window_ms": average_window_ms,
            "suppression_ms": suppression_ms, "minimum_count": minimum_count, "rearm": rearm}  # fmt: skip


@app.command("stream")
def stream(
    wav: Annotated[Path, typer.Argument(help="A recording of any length (resampled and mixed to mono as needed).")],
    model: ModelOption = None,
    threshold: ThresholdOption = None,
    average_window_ms: AverageOption = None,
    suppression_ms: SuppressionOption = None,
    minimum_count: CountOption = None,
    rearm: RearmOption = None,
    as_json: JsonOption = False,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Commands heard in a long recording, smoothed by RecognizeCommands at the settings the model was evaluated at
    (its model card; else evaluate.streaming), each overridable here."""
    with user_errors():
        import numpy as np

        from pipeline.audio import check_audio_path

        check_audio_path(wav)
        base = _base_settings(params_path)
        predictor = _load_predictor(model, params_path)
        settings, source = _stream_settings(base, predictor, _stream_overrides(threshold, average_window_ms, suppression_ms,
                                                                                minimum_count, rearm))  # fmt: skip
        clip = predictor.read(wav, whole=True)
        for note in clip.notes:
            _warn(f"{wav}: {note}")
        audio = clip.audio
        if len(audio) < predictor.clip_samples:
            _warn(f"{wav}: {len(audio)} samples, shorter than one window; padded to {predictor.clip_samples}")
            audio = np.pad(audio, (0, predictor.clip_samples - len(audio)))
        progress = _Progress(clip.seconds, clip.seconds > 60)
        detections = predictor.detect(audio, settings, progress)
        found = [{"time_s": round(d.time_ms / 1000.0, 3), "label": d.label, "score": round(float(d.score), 4)} for d in detections]
        if as_json:
            typer.echo(json.dumps({"file": str(wav), "seconds": round(clip.seconds, 3), "labels": predictor.labels,
                                   "settings": settings.recognize(), "settings_from": source,
                                   "mode": predictor.stream_mode(settings), "detections": found}, indent=2))  # fmt: skip
            return
        from rich.console import Console
        from rich.table import Table

        view = Table("time (s)", "label", "score", title=f"{wav} ({clip.seconds:.1f} s)")
        for row in found:
            view.add_row(f"{row['time_s']:.2f}", row["label"], f"{row['score']:.3f}")
        Console().print(view)
        typer.echo(f"{len(found)} detection(s) at threshold {settings.detection_threshold:g} (settings from {source})")


@app.command("listen")
def listen(
    model: ModelOption = None,
    source: Annotated[str, typer.Option("--input", "-i", help="'-': raw 16-bit little-endian mono PCM on stdin at "
                                        "--rate; 'mic': the default input device (sounddevice).")] = "mic",  # fmt: skip
    rate: Annotated[int, typer.Option("--rate", min=8000, max=48000, help="Sample rate of the input.")] = 16000,
    chunk_ms: Annotated[int, typer.Option("--chunk-ms", min=10, max=2000, help="Audio scored per step.")] = 100,
    threshold: ThresholdOption = None,
    average_window_ms: AverageOption = None,
    suppression_ms: SuppressionOption = None,
    minimum_count: CountOption = None,
    rearm: RearmOption = None,
    show_latency: Annotated[bool, typer.Option("--latency", help="Print per-chunk scoring latency at the end.")] = False,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Live keyword spotting: one line per detection (time, label, score), the smoothing of `kws stream`.

    `arecord -f S16_LE -r 16000 -c 1 -t raw | kws listen --input -` works with no extra package."""
    with user_errors():
        from pipeline.stream.live import listen as run_listen
        from pipeline.stream.live import microphone_chunks, pcm_chunks

        if source not in ("-", "mic"):
            raise KwsError(f"--input {source!r}: expected '-' (raw PCM on stdin) or 'mic'")
        base = _base_settings(params_path)
        predictor = _load_predictor(model, params_path)
        settings, settings_from = _stream_settings(base, predictor, _stream_overrides(threshold, average_window_ms,
                                                                                      suppression_ms, minimum_count, rearm))  # fmt: skip
        chunk = max(1, rate * chunk_ms // 1000)
        chunks = pcm_chunks(sys.stdin.buffer, chunk) if source == "-" else microphone_chunks(rate, chunk)
        typer.echo(f"listening ({source}, {rate} Hz, {chunk_ms} ms chunks; threshold {settings.detection_threshold:g}, "
                   f"settings from {settings_from}) for: " + " ".join(label for label in predictor.labels if not label.startswith("_")),
                   err=True)  # fmt: skip
        report = run_listen(predictor, chunks, rate, settings,
                            lambda d: typer.echo(f"{d.time_ms / 1000.0:9.3f} s  {d.label}  {d.score:.3f}"))  # fmt: skip
        if show_latency:
            typer.echo(f"chunks {report.chunks}, audio {report.seconds:.2f} s, latency per chunk ms: median "
                       f"{report.median_ms:.2f}, p90 {report.p90_ms:.2f}, max {report.max_ms:.2f}", err=True)  # fmt: skip


@app.command("inspect")
def inspect_model(
    model: ModelOption = None,
    as_json: JsonOption = False,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Input/output tensors, labels, sizes, parameters and quantization of a model."""
    with user_errors():
        facts = _load_predictor(model, params_path).describe()
        if as_json:
            typer.echo(json.dumps(facts, indent=2, default=str))
            return
        from rich.console import Console
        from rich.table import Table

        console = Console()
        view = Table("", "", show_header=False, title=str(facts["path"]))
        view.columns[1].overflow = "fold"
        for key in ("kind", "sample_rate", "clip_samples", "parameters", "bytes", "streaming"):
            if facts.get(key) is not None:
                view.add_row(key, f"{facts[key]:,}" if key in ("parameters", "bytes") else str(facts[key]))
        view.add_row("labels", " ".join(facts["labels"]))
        if facts.get("recognize"):  # the RecognizeCommands settings the model was evaluated at (its model card)
            view.add_row("recognize", "\n".join(f"{key} {_setting(value)}" for key, value in facts["recognize"].items()))
        if "registry" in facts:
            reg = facts["registry"]
            view.add_row("registry", f"{reg['name']} version {reg['version']} ({', '.join(reg['aliases'] or []) or 'no alias'})")
        quant = facts.get("quantization")
        if quant:
            dynamic = quant.get("int8_dynamic_mac_fraction", 0)  # int8 weights, input quantized per invoke
            view.add_row("quantization", f"{quant['mode']}" + (f" ({quant['scheme']})" if quant.get("scheme") else "")
                         + f", int8 MAC fraction {quant['int8_mac_fraction']}"
                         + (f" ({dynamic:.3f} dynamic-range: int8 weights, each input quantized per invoke, "
                            "float32 outputs)" if dynamic else ""))  # fmt: skip
            for b in quant["boundaries"]:
                view.add_row(f"  {b['op'].lower()}", f"{b['tensor']}: {b['dtype']} scale {b['scale']:.6g} zero {b['zero_point']}")
        console.print(view)
        tensors = Table("", "name", "shape", "dtype", "scale", "zero point", title="tensors")
        tensors.columns[1].overflow = "fold"
        for side in ("inputs", "outputs"):
            for t in facts.get(side, []):
                tensors.add_row(side[:-1], t["name"], str(t["shape"]), t["dtype"], str(t.get("scale", "")), str(t.get("zero_point", "")))
        console.print(tensors)


@app.command("models")
def models(
    name: Annotated[str | None, typer.Option(help="Registered model name (default: freeze.registered_model_name).")] = None,
    as_json: JsonOption = False,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """List registered model versions with their aliases, their run's metrics and creation time."""
    with user_errors():
        from pipeline.tracking.registry import list_versions

        name = name or _params(params_path).freeze.registered_model_name
        rows = list_versions(name)
        if as_json:
            typer.echo(json.dumps([row.__dict__ for row in rows], indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        def cell(row, key: str) -> str:
            value = row.metrics.get(key)
            return "" if value is None else f"{value:.1f}" if key.startswith("streaming/") else f"{100 * value:.2f} %"

        view = Table("version", "aliases", "test", "real_dev", "false alarms/h", "created", "run", title=name)
        for row in rows:
            view.add_row(str(row.version), ", ".join(row.aliases), cell(row, "test/accuracy"), cell(row, "real_dev/accuracy"),
                         cell(row, "streaming/false_alarms_per_hour"), row.created, row.run_id[:8])  # fmt: skip
        Console().print(view)


@app.command("promote")
def promote(
    version: Annotated[int | None, typer.Option(help="Version to promote.")] = None,
    alias: Annotated[str | None, typer.Option(help="Promote the version holding this alias (default challenger).")] = None,
    to: Annotated[str, typer.Option("--to", help="Alias to move.")] = "champion",
    gate: Annotated[str | None, typer.Option("--set", help="Evaluation set compared clip by clip (default: real_dev, "
                                             "else another extra set, else testing).")] = None,  # fmt: skip
    require_significant: Annotated[bool, typer.Option("--require-significant",
                                   help="Also demand McNemar's exact p < 0.05 for the accuracy gain.")] = False,  # fmt: skip
    force: Annotated[bool, typer.Option("--force", help="Promote even if the gate refuses (recorded).")] = False,
    reason: Annotated[str, typer.Option(help="Why, recorded in the version's tags.")] = "",
    name: Annotated[str | None, typer.Option(help="Registered model name.")] = None,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Move an alias (champion) to a version unless it is worse for users than the current holder.

    Compared on the same real clips (paired, McNemar's exact test) and on streaming false alarms per hour.
    """
    with user_errors():
        from pipeline.tracking.registry import promote as do_promote

        if version is not None and alias is not None:
            raise KwsError("give --version or --alias, not both")
        name = name or _params(params_path).freeze.registered_model_name
        decision = do_promote(name, version, alias, to, force, reason, gate=gate, require_significant=require_significant)
        for line in decision.lines:
            typer.echo(line)
        typer.echo(decision.message)


@app.command("rollback")
def rollback(
    alias: Annotated[str, typer.Option(help="Alias to give back to its previous holder.")] = "champion",
    name: Annotated[str | None, typer.Option(help="Registered model name.")] = None,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Put the previous champion back."""
    with user_errors():
        from pipeline.tracking.registry import rollback as do_rollback

        name = name or _params(params_path).freeze.registered_model_name
        typer.echo(do_rollback(name, alias))


@app.command("tracking-server")
def tracking_server(
    backend_store_uri: Annotated[str | None, typer.Option(help="postgresql+psycopg2://USER@HOST:PORT/DB of an existing database "
                                                          "(default: a local cluster in --postgres-dir).")] = None,  # fmt: skip
    postgres_dir: Annotated[Path, typer.Option(help="Folder of the local PostgreSQL cluster (created on first use).")] = Path(".mlflow-postgres"),
    postgres_port: Annotated[int, typer.Option(help="Port of the local cluster (127.0.0.1).")] = 5433,
    artifacts: Annotated[Path, typer.Option(help="Where the server stores artifacts (clients upload through it).")] = Path("mlartifacts-server"),
    port: Annotated[int, typer.Option(help="Port of the tracking server.")] = 5000,
    workers: Annotated[int, typer.Option(min=1, help="Server worker processes.")] = 2,
) -> None:
    """Run a shared MLflow tracking server on PostgreSQL with proxied artifacts, on 127.0.0.1, until Ctrl-C.

    Then `export MLFLOW_TRACKING_URI=http://127.0.0.1:PORT` switches the pipeline and `kws` to it.
    """
    with user_errors():
        from pipeline.tracking.server import PostgresCluster, start_server, stop_process

        cluster = None
        if backend_store_uri is None:
            cluster = PostgresCluster(postgres_dir, postgres_port)
            cluster.init()
            cluster.start()
            cluster.create_database("mlflow")
            backend_store_uri = cluster.uri("mlflow")
        try:
            process = start_server(backend_store_uri, artifacts, port, postgres_dir / "mlflow-server.log", workers)
            typer.echo(f"MLflow on {backend_store_uri}: export MLFLOW_TRACKING_URI=http://127.0.0.1:{port}  (Ctrl-C stops)")
            try:
                process.wait()
            except KeyboardInterrupt:
                pass
            finally:
                stop_process(process)
        finally:
            if cluster is not None:
                cluster.stop()


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="kws")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
