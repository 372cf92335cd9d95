"""The `kws` command line: one typer app; heavy libraries are imported only by the command that needs them."""

from __future__ import annotations

import contextlib
import json
import logging
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Annotated

import typer

from pipeline.config import Params, SyntheticSource, load_params
from pipeline.errors import KwsError
from pipeline.runner import quiet_environment, show_progress

app = typer.Typer(help="Train, evaluate, freeze and ship keyword-spotting models.", no_args_is_help=True)
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


def _params(path: Path) -> Params:
    return load_params(path)


@data_app.command("generate")
def data_generate(
    out: Annotated[Path, typer.Option(help="Folder to write the corpus into (replaced only when complete).")] = Path("data/generated"),
    speakers: Annotated[int | None, typer.Option(min=1, max=5000, help="Voices in all, espeak + neural (default: params.yaml).")] = None,
    repetitions: Annotated[int | None, typer.Option(min=1, max=20, help="Clips per word and speaker.")] = None,
    piper: Annotated[bool | None, typer.Option("--piper/--no-piper", help="Piper's joe voice (default: params.yaml).")] = None,
    kokoro_blends: Annotated[int | None, typer.Option(min=0, max=500, help="Kokoro blends (default: params.yaml; 0: none).")] = None,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Generate the offline text-to-speech corpus (espeak and neural voices) in the Speech Commands layout.
    Runs on RAY_ADDRESS's Ray cluster when set, else on a local one (KWS_WORKERS=1: in this process)."""
    with user_errors():
        params = _params(params_path)
        from pipeline.data.generate import sized_source
        from pipeline.data.sources import generate_synthetic
        from pipeline.fileio import atomic_dir

        base = next((s for s in params.data.sources if isinstance(s, SyntheticSource)), None)
        source = sized_source(base or SyntheticSource(kind="synthetic"), speakers, piper, kokoro_blends)
        if repetitions is not None:
            source = source.model_copy(update={"repetitions": repetitions})
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
    wav: Annotated[Path, typer.Argument(help="Input wav file.")],
    png: Annotated[Path, typer.Argument(help="Output PNG.")],
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Draw a wav's waveform and the frontend's features (the settings of params.yaml) to a PNG."""
    with user_errors():
        params = _params(params_path)
        if not wav.is_file():
            raise KwsError(f"{wav}: file not found")
        from pipeline.features.plot import draw_spectrogram

        draw_spectrogram(wav, png, params.features)
        typer.echo(f"wrote {png}")


ModelOption = Annotated[
    str | None,
    typer.Option("--model", "-m", help="SavedModel folder, export folder, .tflite/.keras file or models:/NAME@ALIAS "
                 "(default: paths.export/saved_model)."),  # fmt: skip
]


def _warn(message: str) -> None:
    typer.echo(f"warning: {message}", err=True)


@app.command("label-wav")
def label_wav(
    files: Annotated[list[Path], typer.Argument(help="wav (or flac) files, one clip each.")],
    model: ModelOption = None,
    top_k: Annotated[int, typer.Option("--top-k", min=1, help="Labels shown per file.")] = 3,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output: a JSON list, one entry per file.")] = False,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Top labels and scores of each file; other sample rates, stereo and other lengths are converted with a warning."""
    failed = 0
    with user_errors():
        params = _params(params_path)
        import numpy as np

        from pipeline.inference import load_model
        from pipeline.predict import read_clip

        predictor = load_model(model, params)
        k = min(top_k, len(predictor.labels))
        results: list[dict] = []
        for path in files:
            try:
                clip = read_clip(path, predictor.sample_rate, predictor.clip_samples)
            except KwsError as error:  # one unreadable file does not stop the others
                typer.echo(f"error: {error}", err=True)
                results.append({"file": str(path), "error": str(error)})
                failed += 1
                continue
            for note in clip.notes:
                _warn(f"{path}: {note}")
            scores = predictor.scores(clip.audio[None])[0]
            order = np.argsort(-scores, kind="stable")[:k]
            top = [{"label": predictor.labels[i], "score": round(float(scores[i]), 6)} for i in order]
            results.append({"file": str(path), "top": top, "notes": clip.notes})
        if as_json:
            typer.echo(json.dumps(results, indent=2))
        else:
            from rich.console import Console
            from rich.table import Table

            view = Table("file", *(f"#{i + 1}" for i in range(k)))
            view.columns[0].overflow = "fold"
            for row in results:
                cells = [f"{t['label']} {t['score']:.3f}" for t in row["top"]] if "top" in row else ["unreadable"]
                view.add_row(row["file"], *cells)
            Console().print(view)
    if failed:
        raise typer.Exit(1)


@app.command("stream")
def stream(
    wav: Annotated[Path, typer.Argument(help="A recording of any length (resampled and mixed to mono as needed).")],
    model: ModelOption = None,
    as_json: JsonOption = False,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Commands heard in a long recording: sliding windows smoothed by RecognizeCommands (evaluate.streaming)."""
    with user_errors():
        params = _params(params_path)
        import numpy as np

        from pipeline.inference import load_model
        from pipeline.predict import read_clip
        from pipeline.stream.run import recognize_stream, stream_mode

        predictor = load_model(model, params)
        clip = read_clip(wav, predictor.sample_rate, None)
        for note in clip.notes:
            _warn(f"{wav}: {note}")
        audio = clip.audio
        if len(audio) < predictor.clip_samples:
            _warn(f"{wav}: {len(audio)} samples, shorter than one window; padded to {predictor.clip_samples}")
            audio = np.pad(audio, (0, predictor.clip_samples - len(audio)))
        settings = params.evaluate.streaming
        detections = recognize_stream(audio, predictor.scores, predictor.labels, settings, predictor.sample_rate,
                                      clip_samples=predictor.clip_samples, sequence_fn=predictor.stream_fn)  # fmt: skip
        found = [{"time_s": round(d.time_ms / 1000.0, 3), "label": d.label, "score": round(float(d.score), 4)} for d in detections]
        keys = ("clip_stride_ms", "average_window_ms", "detection_threshold", "suppression_ms", "minimum_count")
        if as_json:
            typer.echo(json.dumps({"file": str(wav), "seconds": round(len(clip.audio) / predictor.sample_rate, 3),
                                   "settings": {key: getattr(settings, key) for key in keys},
                                   "mode": stream_mode(settings, predictor.stream_fn),
                                   "detections": found}, indent=2))  # fmt: skip
            return
        from rich.console import Console
        from rich.table import Table

        view = Table("time (s)", "label", "score", title=f"{wav} ({len(clip.audio) / predictor.sample_rate:.1f} s)")
        for row in found:
            view.add_row(f"{row['time_s']:.2f}", row["label"], f"{row['score']:.3f}")
        Console().print(view)
        typer.echo(f"{len(found)} detection(s)")


@app.command("inspect")
def inspect_model(
    model: ModelOption = None,
    as_json: JsonOption = False,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Input/output tensors, labels, sizes, parameters and quantization of a model."""
    with user_errors():
        params = _params(params_path)
        from pipeline.inference import load_model

        facts = load_model(model, params).describe()
        if as_json:
            typer.echo(json.dumps(facts, indent=2, default=str))
            return
        from rich.console import Console
        from rich.table import Table

        console = Console()
        view = Table("", "", show_header=False, title=str(facts["path"]))
        view.columns[1].overflow = "fold"
        for key in ("kind", "sample_rate", "clip_samples", "parameters", "bytes"):
            if facts.get(key) is not None:
                view.add_row(key, f"{facts[key]:,}" if key in ("parameters", "bytes") else str(facts[key]))
        view.add_row("labels", " ".join(facts["labels"]))
        if "registry" in facts:
            reg = facts["registry"]
            view.add_row("registry", f"{reg['name']} version {reg['version']} ({', '.join(reg['aliases'] or []) or 'no alias'})")
        quant = facts.get("quantization")
        if quant:
            view.add_row("quantization", f"{quant['mode']}" + (f" ({quant['scheme']})" if quant.get("scheme") else "")
                         + f", int8 MAC fraction {quant['int8_mac_fraction']}")  # fmt: skip
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
    """List registered model versions with their aliases, metrics and creation time."""
    with user_errors():
        from pipeline.tracking.registry import list_versions

        name = name or _params(params_path).freeze.registered_model_name
        rows = list_versions(name)
        if as_json:
            typer.echo(json.dumps([row.__dict__ for row in rows], indent=2))
            return
        from rich.console import Console
        from rich.table import Table

        view = Table("version", "aliases", "test_accuracy", "real_dev_accuracy", "created", "run", title=name)
        for row in rows:
            view.add_row(str(row.version), ", ".join(row.aliases), row.tags.get("test_accuracy", ""),
                         row.tags.get("real_dev_accuracy", ""), row.created, row.run_id[:8])  # fmt: skip
        Console().print(view)


@app.command("promote")
def promote(
    version: Annotated[int | None, typer.Option(help="Version to promote.")] = None,
    alias: Annotated[str | None, typer.Option(help="Promote the version holding this alias (default challenger).")] = None,
    to: Annotated[str, typer.Option("--to", help="Alias to move.")] = "champion",
    metric: Annotated[str, typer.Option(help="Version tag compared with the current holder.")] = "test_accuracy",
    force: Annotated[bool, typer.Option("--force", help="Promote even if worse on the metric.")] = False,
    reason: Annotated[str, typer.Option(help="Why, recorded in the version's tags.")] = "",
    name: Annotated[str | None, typer.Option(help="Registered model name.")] = None,
    params_path: ParamsOption = Path("params.yaml"),
) -> None:
    """Move an alias (champion) to a version only if it is at least as good on the metric."""
    with user_errors():
        from pipeline.tracking.registry import promote as do_promote

        if version is not None and alias is not None:
            raise KwsError("give --version or --alias, not both")
        name = name or _params(params_path).freeze.registered_model_name
        typer.echo(do_promote(name, version, alias, to, metric, force, reason))


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


def main() -> None:  # pragma: no cover - console entry point
    app(prog_name="kws")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
