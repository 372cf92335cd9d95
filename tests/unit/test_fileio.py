"""Atomic writes after faults: leftovers of a killed run are removed, folders are readable by others, a full disk is
one line (checked before the work where the size is known)."""

from __future__ import annotations

import os
import stat

import pytest
import yaml

from pipeline import fileio
from pipeline.errors import DiskFullError
from pipeline.fileio import atomic_dir, atomic_path, disk_full_message, ensure_space, write_json
from pipeline.runner import run_stage
from tests.conftest import tiny_params_dict


def _params_file(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(tiny_params_dict(tmp_path)))


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_atomic_dir_is_created_with_the_usual_folder_mode(tmp_path):
    with atomic_dir(tmp_path / "raw") as tmp:
        (tmp / "a").mkdir()
    assert _mode(tmp_path / "raw") == 0o777 & ~_umask()  # 0755 under umask 022, not mkdtemp's 0700


def test_stale_temp_folders_of_a_killed_run_are_removed_by_the_next(tmp_path):
    stale = [tmp_path / ".raw.k3j_x9q2", tmp_path / ".raw.old"]  # mkdtemp's name, and a half-done swap
    for folder in stale:
        (folder / "word").mkdir(parents=True)
        (folder / "word" / "clip.wav").write_bytes(b"x" * 1000)
    keep = [tmp_path / ".rawdata.k3j_x9q2", tmp_path / ".raw.notatemp_name"]  # other names are left alone
    for folder in keep:
        folder.mkdir()
    with atomic_dir(tmp_path / "raw") as tmp:
        (tmp / "new.txt").write_text("new")
    assert not any(folder.exists() for folder in stale)
    assert all(folder.exists() for folder in keep)
    assert (tmp_path / "raw" / "new.txt").read_text() == "new"


def test_stale_temp_file_of_an_interrupted_write_is_removed(tmp_path):
    leftover = tmp_path / ".training_features.npy.ab12cd34.npy"
    leftover.write_bytes(b"0" * 4096)
    with atomic_path(tmp_path / "training_features.npy", ".npy") as tmp:
        tmp.write_bytes(b"1")
    assert not leftover.exists() and (tmp_path / "training_features.npy").read_bytes() == b"1"


def test_durable_write_replaces_the_file(tmp_path):
    write_json(tmp_path / "a.json", {"v": 1})
    with atomic_path(tmp_path / "a.json", ".json", durable=True) as tmp:
        tmp.write_text('{"v": 2}')
    assert (tmp_path / "a.json").read_text() == '{"v": 2}'
    assert _mode(tmp_path / "a.json") == 0o666 & ~_umask()


def test_too_little_space_is_one_error_naming_the_path_and_the_size(tmp_path, monkeypatch):
    monkeypatch.setattr(fileio, "free_bytes", lambda path: 3_000_000)
    with pytest.raises(DiskFullError) as error:
        ensure_space(tmp_path / "features", 250_000_000, "the features")
    message = str(error.value)
    assert str(tmp_path / "features") in message and "250 MB" in message and "3 MB" in message
    assert "\n" not in message
    ensure_space(tmp_path / "features", 1_000_000)  # enough: no error


def test_enospc_during_a_stage_is_one_line_naming_the_output_and_exit_code_1(tmp_path, capsys):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    _params_file(tmp_path)
    out = tmp_path / "features" / "training_features.npy"

    def work(params):
        with atomic_path(out, ".npy"), open("/dev/full", "w") as handle:  # every write fails with ENOSPC
            handle.write("x" * 100_000)
            handle.flush()

    assert run_stage("features", work, [str(tmp_path / "params.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith(f"error: no space left on device writing {out} ("), err
    assert not out.exists() and not list(out.parent.glob(".training_features*")), "no partial output left"


def test_enospc_outside_an_atomic_write_is_one_line_too(tmp_path, capsys):
    if not os.path.exists("/dev/full"):
        pytest.skip("no /dev/full on this system")
    _params_file(tmp_path)

    def work(params):
        with open("/dev/full", "w") as handle:
            handle.write("x" * 100_000)
            handle.flush()

    assert run_stage("freeze", work, [str(tmp_path / "params.yaml")]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: no space left on device"), err


def test_disk_full_message_recognises_library_wording():
    assert disk_full_message(OSError(28, "No space left on device", "/data/x.npy")).startswith(
        "no space left on device writing /data/x.npy")  # fmt: skip
    assert disk_full_message(RuntimeError("Failed to write: No space left on device")) is not None
    assert disk_full_message(ValueError("bad value")) is None
    assert disk_full_message(OSError(2, "No such file")) is None


def test_other_errors_still_raise_from_run_stage(tmp_path):
    _params_file(tmp_path)

    def work(params):
        raise ZeroDivisionError("a bug is a bug")

    with pytest.raises(ZeroDivisionError):
        run_stage("x", work, [str(tmp_path / "params.yaml")])


def test_the_same_model_gives_the_same_keras_bytes_at_any_time(tmp_path, monkeypatch):
    """Fault: model.save stamps the file with the save time (metadata.json's date_saved, the weights entry's date)
    and numbers shared objects by their address in memory, so a forced rerun of train with identical weights
    changed model.keras's md5 and DVC reran every later stage."""
    import datetime
    import time as clock

    import keras
    import numpy as np

    def build():  # new objects each time, as a new process builds them; two layers share one dtype policy
        inputs, policy = keras.Input((4,), name="clip"), keras.DTypePolicy("float32")
        hidden = keras.layers.Dense(4, kernel_initializer="identity", dtype=policy, name="hidden")(inputs)
        return keras.Model(inputs, keras.layers.Dense(3, kernel_initializer="ones", dtype=policy, name="head")(hidden), name="m")

    fileio.write_keras(tmp_path / "a.keras", build())
    later, then = clock.localtime(clock.time() + 3600), datetime.datetime.now() + datetime.timedelta(hours=1)
    monkeypatch.setattr("time.localtime", lambda *_: later)
    monkeypatch.setattr(datetime, "datetime", type("Later", (datetime.datetime,), {"now": staticmethod(lambda *_: then)}))
    fileio.write_keras(tmp_path / "b.keras", build())
    assert (tmp_path / "a.keras").read_bytes() == (tmp_path / "b.keras").read_bytes()
    loaded = keras.saving.load_model(tmp_path / "b.keras")
    np.testing.assert_array_equal(loaded.predict(np.ones((1, 4)), verbose=0), [[4.0, 4.0, 4.0]])


def test_reproducible_zip_dates_every_entry_at_the_zip_epoch_and_rewrites_the_named_members(tmp_path):
    import zipfile

    path = tmp_path / "model.keras"
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr(zipfile.ZipInfo("metadata.json", (2026, 12, 3, 23, 50, 0)), b'{"date_saved": "23:50"}')
        archive.writestr(zipfile.ZipInfo("model.weights.h5", (2026, 12, 3, 23, 50, 2)), b"\x89HDF")
    fileio.reproducible_zip(path, {"metadata.json": lambda data: data.upper()})
    with zipfile.ZipFile(path) as archive:
        assert [(i.filename, i.date_time) for i in archive.infolist()] == [("metadata.json", fileio.ZIP_EPOCH),
                                                                            ("model.weights.h5", fileio.ZIP_EPOCH)]  # fmt: skip
        assert archive.read("metadata.json") == b'{"DATE_SAVED": "23:50"}' and archive.read("model.weights.h5") == b"\x89HDF"
