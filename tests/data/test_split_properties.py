"""Property test of the download + split stages over generated folders with random legal names (issue 14).

For any folder of word clips with odd names (spaces, `@`, `#`, unicode, `(1)`, upper-case extensions, nesting,
case-variant word folders, hidden companions, stray files) and any split settings, either the split refuses in one
line naming the problem, or: every packed row is its manifest row's audio, and every input file appears exactly
once in `reports/files.csv` (used, not_sampled, quarantined with a reason, skipped, or noise).
"""

from __future__ import annotations

import tempfile
from pathlib import Path, PurePosixPath

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pipeline.data.sources import fetch_sources
from pipeline.data.split import run_split
from pipeline.errors import DataError
from tests.conftest import make_params, tone_clip
from tests.data.test_user_datasets import assert_packed_rows_are_their_manifest_rows

pytestmark = pytest.mark.slow

FOLDERS = ["yes", "no", "cat", "dog", "Yes", "NO", "Dog"]
SLOTS = {"yes": 0, "no": 1, "cat": 2, "dog": 3}
STEM = st.text(st.sampled_from(list("abkxz0179 @#()-_éü日本")), min_size=1, max_size=10).filter(
    lambda t: not t.startswith(".") and t.strip(" ") != ""
)
CLIP = st.tuples(
    st.sampled_from(FOLDERS),
    st.lists(STEM, max_size=2),  # sub-folders below the word folder
    STEM,
    st.sampled_from(["_nohash_0", "_nohash_1", "", " (1)"]),
    st.sampled_from([".wav", ".WAV", ".Wav"]),
    st.sampled_from(["good"] * 8 + ["empty", "hidden twin"]),
)
SETTINGS = st.fixed_dictionaries(
    {
        "validation_percentage": st.floats(10, 35),
        "testing_percentage": st.floats(10, 35),
        "unknown_percentage": st.sampled_from([0, 25, 100]),
        "silence_percentage": st.sampled_from([0, 1, 20]),
        "min_class_count": st.just(0),
        "max_bad_fraction": st.just(0.5),
    }
)


def write_folder(root: Path, clips: list[tuple]) -> dict[str, str]:
    """Write the clips (deduplicated by where they land); return {ledger path: expected fate}."""
    expected: dict[str, str] = {}
    landing: set[str] = set()
    for i, (folder, subs, stem, suffix, ext, kind) in enumerate(clips):
        name = f"{stem}{suffix}{ext}"
        rel = PurePosixPath(folder, *subs, name)
        target = str(PurePosixPath(folder.lower(), *subs, name))
        if target in landing:
            continue
        landing.add(target)
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        word = folder.lower()
        audio = tone_clip(word, i, 0, slot=SLOTS[word]) if kind != "empty" else np.zeros(0, np.float32)
        sf.write(path, audio, 16000, subtype="PCM_16")
        expected[f"mine/{target}"] = "quarantined" if kind == "empty" else "clip"
        if kind == "hidden twin":  # a macOS AppleDouble companion beside the clip
            (path.parent / f"._{name}").write_bytes(b"\x00\x05\x16\x07")
            expected[f"mine/{rel.parent / f'._{name}'}"] = "skipped"
    (root / "yes" / "notes.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "yes" / "notes.txt").write_text("not audio")
    expected["mine/yes/notes.txt"] = "quarantined"
    noise = root / "_background_noise_"
    noise.mkdir(exist_ok=True)
    for n in range(2):
        sf.write(noise / f"noise {n}.wav", 0.2 * np.random.default_rng(n).uniform(-1, 1, 16000 * 20), 16000, subtype="PCM_16")
        expected[f"mine/_background_noise_/noise {n}.wav"] = "noise"
    return expected


@settings(max_examples=8, derandomize=True, deadline=None, suppress_health_check=list(HealthCheck))
@given(clips=st.lists(CLIP, min_size=24, max_size=40), split=SETTINGS)
def test_every_file_is_accounted_for_once_and_every_packed_row_is_its_clip(clips, split):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        expected = write_folder(tmp / "corpus", clips)
        params = make_params(tmp, sources=[{"kind": "local", "name": "mine", "path": str(tmp / "corpus")}],
                             data={"keywords": ["yes", "no"], "unknown_words": ["cat", "dog"]}, split=split)  # fmt: skip
        fetch_sources(params, progress=False)
        try:
            result = run_split(params, progress=False)
        except DataError as error:  # a refusal is allowed only as one line naming what is missing
            message = str(error)
            assert "\n" not in message
            assert "gets no clips" in message or "quarantined, above split.max_bad_fraction" in message, message
            return
        ledger = pd.read_csv(params.paths.reports / "files.csv", keep_default_na=False)
        assert ledger["path"].is_unique
        assert set(ledger["path"]) == set(expected)
        fates = dict(zip(ledger["path"], ledger["status"], strict=True))
        for path, fate in expected.items():
            allowed = {"used", "not_sampled", "quarantined"} if fate == "clip" else {fate}
            assert fates[path] in allowed, (path, fates[path])
        assert (ledger.loc[ledger["status"] == "quarantined", "reason"] != "").all()
        used = ledger[ledger["status"] == "used"]
        words = result.manifest[~result.manifest["path"].str.contains("_background_noise_/")]
        assert sorted(used["path"]) == sorted(words["path"])
        assert result.summary["files"] == ledger["status"].value_counts().reindex(
            ["used", "not_sampled", "quarantined", "skipped", "noise"], fill_value=0
        ).to_dict()
        assert assert_packed_rows_are_their_manifest_rows(params) == len(result.manifest)
