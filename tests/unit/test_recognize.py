"""RecognizeCommands on hand-made score sequences: threshold, minimum count, suppression, TF's state machine."""

from __future__ import annotations

import numpy as np
import pytest

from pipeline.stream.recognize import Detection, RecognizeCommands, commands, detect, smooth

LABELS = ["_silence_", "_unknown_", "yes", "no"]
STEP = 30.0  # ms between results, TF's clip_stride_ms
# with a 500 ms window and 30 ms steps a full window holds 17 results (t-480 ... t); one-hot scores reach
# an average above 0.7 once 12 of them carry the label: 330 ms after the label starts


def one_hot(label: str, p: float = 1.0) -> np.ndarray:
    """Score p on `label`, the rest spread evenly over the other classes."""
    scores = np.full(len(LABELS), (1.0 - p) / (len(LABELS) - 1))
    scores[LABELS.index(label)] = p
    return scores


def sequence(*segments: tuple[str, float], p: float = 1.0, step: float = STEP) -> tuple[np.ndarray, np.ndarray]:
    """Results every `step` ms: each (label, duration_ms) segment in turn, starting at t = 0."""
    rows, times, t = [], [], 0.0
    for label, duration in segments:
        for _ in range(round(duration / step)):
            rows.append(one_hot(label, p))
            times.append(t)
            t += step
    return np.array(rows), np.array(times)


def run(*segments: tuple[str, float], p: float = 1.0, step: float = STEP, **settings) -> list[Detection]:
    scores, times = sequence(*segments, p=p, step=step)
    return detect(scores, times, LABELS, **settings)


def test_sustained_word_gives_one_detection_at_the_right_time():
    found = run(("_silence_", 1020), ("yes", 3000), ("_silence_", 1000))
    assert len(found) == 1
    assert found[0].label == "yes"
    assert found[0].time_ms == 1020 + 330
    assert found[0].score == pytest.approx(12 / 17)


def test_below_threshold_gives_nothing():
    assert run(("yes", 3000), p=0.65) == []
    assert run(("yes", 3000), p=0.75, detection_threshold=0.75) == []  # TF's test is strict: score > threshold
    assert [d.label for d in run(("yes", 3000), p=0.76, detection_threshold=0.75)] == ["yes"]


def test_fewer_than_minimum_count_results_gives_nothing():
    # results every 200 ms: a 500 ms window never holds more than 3 of them
    assert run(("yes", 3000), step=200.0, minimum_count=4) == []
    assert [d.time_ms for d in run(("yes", 3000), step=200.0, minimum_count=3)] == [400.0]


def test_results_must_span_a_quarter_window():
    # TF's second guard: with minimum_count 1 the first decision still waits for 125 ms of results
    found = run(("yes", 1000), step=100.0, minimum_count=1)
    assert [d.time_ms for d in found] == [200.0]


def test_other_word_within_suppression_is_not_reported_after_it_is():
    # yes is reported at 150 ms (first decision: 6 results span 150 ms >= 125 ms)
    # "no" for 420 ms: its average is above 0.7 from 930 ms but falls below it again before 1170 ms
    short = run(("yes", 600), ("no", 420), ("_silence_", 1000), suppression_ms=1000)
    assert [(d.label, d.time_ms) for d in short] == [("yes", 150.0)]
    long = run(("yes", 600), ("no", 1000), ("_silence_", 1000), suppression_ms=1000)
    assert [(d.label, d.time_ms) for d in long] == [("yes", 150.0), ("no", 1170.0)]  # first t with t - 150 > 1000


def test_tf_rule_same_word_again_needs_a_registered_label_in_between():
    tf = {"rearm": "other_command", "suppression_ms": 1000}
    # silence only registers as the previous command once 1000 ms passed since "yes": a short pause does not
    quick = run(("yes", 600), ("_silence_", 300), ("yes", 1000), ("_silence_", 500), **tf)
    assert [d.label for d in quick] == ["yes"]
    # a long pause registers silence at 1170 ms; after silence the next word is reported at once (TF)
    slow = run(("yes", 600), ("_silence_", 900), ("yes", 1000), **tf)
    assert [(d.label, d.time_ms) for d in slow] == [("yes", 150.0), ("yes", 1500.0 + 330)]


def noisy_pause(ms: float) -> np.ndarray:
    """Results of a pause in noise: `_silence_` leads at 0.4, under any threshold used here."""
    return np.repeat(one_hot("_silence_", 0.4)[None], round(ms / STEP), axis=0)


def test_same_word_twice_in_noise_is_reported_twice_once_released():
    """Two "yes" 1.5 s apart, the pause between them in noise: nothing passes the threshold there, so TF's rule
    never registers another command and drops the second "yes"; `release` reports it (the default)."""
    word = np.repeat(one_hot("yes")[None], round(1000 / STEP), axis=0)
    scores = np.concatenate([word, noisy_pause(500), word])
    times = np.arange(len(scores)) * STEP
    tf = detect(scores, times, LABELS, rearm="other_command")
    assert [(d.label, d.time_ms) for d in tf] == [("yes", 150.0)]
    released = detect(scores, times, LABELS)
    assert [(d.label, d.time_ms) for d in released] == [("yes", 150.0), ("yes", 1800.0)]
    # the same when the pause keeps "yes" on top at a score under the threshold
    dip = np.concatenate([word, np.repeat(one_hot("yes", 0.5)[None], 17, axis=0), word])
    assert len(detect(dip, np.arange(len(dip)) * STEP, LABELS)) == 2
    assert len(detect(dip, np.arange(len(dip)) * STEP, LABELS, rearm="other_command")) == 1


def test_release_keeps_suppression_and_never_repeats_a_sustained_word():
    word = np.repeat(one_hot("yes")[None], round(1000 / STEP), axis=0)
    scores = np.concatenate([word, noisy_pause(500), word])
    times = np.arange(len(scores)) * STEP
    # the second "yes" passes the threshold from 1,800 ms to the end: reported only once more than suppression_ms passed
    assert [d.time_ms for d in detect(scores, times, LABELS, suppression_ms=2000)] == [150.0, 2160.0]
    assert [d.time_ms for d in detect(scores, times, LABELS, suppression_ms=3000)] == [150.0]
    assert len(run(("yes", 10_000), suppression_ms=0)) == 1  # above the threshold throughout: never released
    with pytest.raises(ValueError, match="rearm must be one of"):
        RecognizeCommands(LABELS, rearm="tf")


def test_sustained_word_is_never_repeated():
    assert len(run(("yes", 10_000), suppression_ms=500)) == 1


def test_silence_and_unknown_are_never_reported_but_keep_tf_state():
    recognizer = RecognizeCommands(LABELS)
    scores, times = sequence(("_unknown_", 1000), ("_silence_", 1000), ("_unknown_", 1000))
    assert [recognizer.process(s, t) for s, t in zip(scores, times, strict=True)] == [None] * len(times)
    assert recognizer.previous_label == "_unknown_"  # registered as TF would, just not returned
    # after a registered _unknown_, a keyword obeys the suppression time since that _unknown_
    found = run(("_unknown_", 600), ("yes", 1000), suppression_ms=500)
    assert [(d.label, d.time_ms) for d in found] == [("yes", 930.0)]


def test_time_must_not_decrease():
    recognizer = RecognizeCommands(LABELS)
    recognizer.process(one_hot("yes"), 100.0)
    recognizer.process(one_hot("yes"), 100.0)  # equal times are fine
    with pytest.raises(ValueError, match="time order"):
        recognizer.process(one_hot("yes"), 99.0)


def test_bad_inputs_raise():
    with pytest.raises(ValueError, match="expected 4 scores"):
        RecognizeCommands(LABELS).process(np.ones(3), 0.0)
    with pytest.raises(ValueError):
        RecognizeCommands([])
    with pytest.raises(ValueError, match=r"scores \[N, C\]"):
        detect(np.ones((3, 4)), np.arange(2), LABELS)


def test_reset_forgets_state():
    recognizer = RecognizeCommands(LABELS)
    scores, times = sequence(("yes", 600))
    first = [d for s, t in zip(scores, times, strict=True) if (d := recognizer.process(s, t))]
    recognizer.reset()
    again = [d for s, t in zip(scores, times, strict=True) if (d := recognizer.process(s, t))]
    assert first == again == [Detection("yes", 150.0, 1.0)]


@pytest.mark.parametrize("seed", range(6))
def test_detect_reports_exactly_what_the_stateful_recognizer_reports(seed):
    """`detect` (one vectorised smoothing pass, then only the results above threshold) against `process` row by
    row: the same Detections, scores bit for bit, over random settings, steps (equal times included) and scores."""
    rng = np.random.default_rng(seed)
    labels = [*LABELS, "up"]
    found = 0
    for _ in range(40):
        n = int(rng.integers(0, 300))
        probs = rng.dirichlet(np.full(len(labels), 0.3), size=-(-n // 8))
        scores = np.repeat(probs, 8, axis=0)[:n]  # words last a few results, as in a stream
        times = np.cumsum(rng.choice([0.0, 10.0, 20.0, 30.0, 200.0], size=n)) + rng.uniform(0, 50)
        settings = {"average_window_ms": float(rng.choice([37.5, 100.0, 500.0, 1000.0])),
                    "detection_threshold": float(rng.uniform(0.2, 0.9)),
                    "suppression_ms": float(rng.choice([0.0, 500.0, 1500.0])),
                    "minimum_count": int(rng.integers(1, 6)),
                    "rearm": str(rng.choice(["release", "other_command"]))}  # fmt: skip
        recognizer = RecognizeCommands(labels, **settings)
        expected = [d for s, t in zip(scores, times, strict=True) if (d := recognizer.process(s, t))]
        assert detect(scores, times, labels, **settings) == expected
        found += len(expected)
    assert found > 20  # the comparison covered real detections, not only empty lists


def test_one_smoothing_serves_every_threshold():
    scores, times = sequence(("_silence_", 600), ("yes", 1000), ("_silence_", 600), ("no", 1000), p=0.8)
    smoothed = smooth(scores, times)
    for threshold in (0.5, 0.7, 0.75, 0.79, 0.8):
        assert commands(smoothed, LABELS, threshold) == detect(scores, times, LABELS, detection_threshold=threshold)
    assert [d.label for d in commands(smoothed, LABELS, 0.75)] == ["yes", "no"]
    assert commands(smoothed, LABELS, 0.81) == []  # no average exceeds the 0.8 the words score
    assert smooth(np.zeros((0, 4)), np.zeros(0)).index.size == 0


def test_detect_rejects_what_process_rejects():
    with pytest.raises(ValueError, match="time order: got 99.0 ms after 100.0 ms"):
        detect(np.ones((3, 4)) / 4, np.array([0.0, 100.0, 99.0]), LABELS)
    with pytest.raises(ValueError, match="finite"):
        detect(np.ones((2, 4)) / 4, np.array([0.0, np.nan]), LABELS)
    with pytest.raises(ValueError, match="expected 4 scores"):
        detect(np.ones((2, 3)), np.arange(2.0), LABELS)


def test_detect_matches_process_at_the_edges():
    """One class (where np.mean would pair rows up), an empty [0, 0] score array (short audio), a fractional
    minimum count, NaN scores; a NaN window is refused by both forms."""
    rng = np.random.default_rng(3)
    one = ["yes"]
    scores, times = rng.uniform(0.6, 0.8, size=(400, 1)), np.arange(400) * 20.0
    for threshold in (0.69, 0.7, 0.71):
        recognizer = RecognizeCommands(one, detection_threshold=threshold, suppression_ms=0.0)
        expected = [d for s, t in zip(scores, times, strict=True) if (d := recognizer.process(s, t))]
        assert detect(scores, times, one, detection_threshold=threshold, suppression_ms=0.0) == expected
    assert detect(np.zeros((0, 0)), np.zeros(0), LABELS) == []
    noisy, stamps = sequence(("_silence_", 600), ("yes", 1000), ("no", 1000))
    noisy[5, 2] = np.nan
    for settings in ({"minimum_count": 2.5}, {}):
        recognizer = RecognizeCommands(LABELS, **settings)
        expected = [d for s, t in zip(noisy, stamps, strict=True) if (d := recognizer.process(s, t))]
        assert detect(noisy, stamps, LABELS, **settings) == expected
    with pytest.raises(ValueError, match="average_window_ms > 0"):
        detect(noisy, stamps, LABELS, average_window_ms=float("nan"))
    with pytest.raises(ValueError, match="average_window_ms > 0"):
        RecognizeCommands(LABELS, average_window_ms=float("nan"))


def test_a_model_card_records_the_settings_it_was_evaluated_at_and_a_damaged_one_is_named(tmp_path):
    """The freeze stage writes evaluate.streaming's RecognizeCommands settings into the model card; reading them
    back checks each one as params.yaml would and names the first bad one (the CLI shows it as one line)."""
    from pipeline.config import RECOGNIZE_SETTINGS, StreamParams
    from pipeline.errors import KwsError
    from pipeline.inference import card_recognize, model_card, read_saved_model_card

    settings = StreamParams(detection_threshold=0.79, average_window_ms=400, rearm="other_command").recognize()
    assert tuple(settings) == RECOGNIZE_SETTINGS
    assert settings["detection_threshold"] == 0.79 and settings["average_window_ms"] == 400 and settings["rearm"] == "other_command"
    card = model_card(["_silence_", "yes"], 16000, 16000, "speech_embedding", recognize=settings)
    assert card_recognize(card, tmp_path) == settings
    assert card_recognize(model_card(["yes"], 16000, 16000, "mfcc"), tmp_path) is None  # an older export: none recorded
    assert card_recognize(None, tmp_path) is None
    for bad, expected in (({"minimum_count": 0}, "recognize.minimum_count: Input should be greater than or equal to 1"),
                          ({"suppression_ms": "500"}, "recognize.suppression_ms: expected a number, not a quoted string"),
                          ({"window_ms": 500}, "recognize.window_ms is not a RecognizeCommands setting")):  # fmt: skip
        with pytest.raises(KwsError, match=rf"^{tmp_path}: its model card's {expected}.*; re-run the freeze stage$"):
            card_recognize({**card, "recognize": {**settings, **bad}}, tmp_path)
    with pytest.raises(KwsError, match="recognize is not a mapping"):
        card_recognize({**card, "recognize": [0.79]}, tmp_path)
    (tmp_path / "assets").mkdir()
    (tmp_path / "assets" / "kws.json").write_text("[1, 2]")
    with pytest.raises(KwsError, match=r"assets/kws.json is not a JSON object"):
        read_saved_model_card(tmp_path)
