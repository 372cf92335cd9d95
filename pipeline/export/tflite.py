"""TFLite export of the serving SavedModel (float, or int8 past the spectral frontend), its runner and checks.

int8 design. Full-integer conversion quantizes the raw audio to int8 at the input (scale 1/127.5: a clip at the
dev set's median RMS of 0.06 spans ~8 levels) and runs SQRT / mel / LOG on int8 values; an int8 input tensor
(`scheme="int8_io"`) is the same graph with the quantization moved to the caller. The default
`scheme="float_frontend"` calibrates the whole graph, then quantizes all but the signal-processing ops (the
`spectral` AudioFrontend inside the serving model's `frontend` scope; `tf.lite.experimental.QuantizationDebugger`
with `denylisted_nodes`, i.e. `mlir_quantize`): audio in, STFT / mel / log / DCT in float32 (RFFT2D has no
integer kernel, and log-compressed energies need float's range), features quantized once, every learned op —
the speech-embedding backbone's 20 convolutions included — int8, float32 scores out; builtin ops only.
Measured with a DS-CNN (64 filters, 4 blocks, 73.2 % float) on 721 held-out real Speech Commands dev clips,
at gain x1 / -20 dB / -30 dB (top-1 %, MACs in int8, file size):
  float TFLite                 73.2 / 75.0 / 74.1   0 %     162 kB
  int8, float_io / int8_io     22.9 /  8.6 /  8.7   100 %    77 kB   (clips with peak < 0.1: 3.5 % vs 79 %)
  int8, float_frontend         73.5 / 74.3 / 73.5   94.7 %  112 kB   (94.5 % top-1 agreement with float)
The default model (speech embedding + conv head), 2,201 real_dev clips / 864 generated testing clips, 1 thread:
  float TFLite                 89.23 % / 95.49 %    0 %    1,520 kB   4.9 ms a clip
  int8, backbone in float      89.19 % / 95.49 %    0.4 %  1,426 kB   4.7 ms   (the export before this scheme)
  int8, float_frontend         88.78 % / 95.60 %   98.7 %    484 kB   2.4 ms
"""

from __future__ import annotations

import collections
import re
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import numpy as np

from pipeline.errors import KwsError
from pipeline.fileio import atomic_path

Mode = Literal["float", "int8"]
Int8Scheme = Literal["float_frontend", "dynamic_backbone", "float_backbone", "float_io", "int8_io"]
# ops of the signal processing (AudioFrontend, named SPECTRAL_NAME) inside serving.build_serving_model's feature
# layer: STFT / mel / log / DCT. A learned backbone in the feature layer (the speech embedding CNN) is not in it.
FLOAT_SCOPE = re.compile(r"(^|/)frontend(_\d+)?/(.+/)?(spectral|input_block)(_\d+)?(/|$)")
FEATURE_SCOPE = re.compile(r"(^|/)frontend(_\d+)?/")  # the whole feature layer, a pretrained backbone included
FLOAT_SCOPES = {"float_frontend": FLOAT_SCOPE, "float_backbone": FEATURE_SCOPE}
FLOAT_PART = {
    "float_frontend": "the spectral frontend (framing, RFFT2D, mel, log; DCT for MFCC) runs in float32: RFFT2D has no integer "
                      "kernel and log energies need float range; so does a speech-embedding backbone's first "
                      "convolution block, which reads those log energies (in int8 it cost ~1 point); every later "
                      "layer runs in int8",
    "dynamic_backbone": "the spectral frontend (framing, RFFT2D, mel, log) and the backbone's first convolution block "
                        "run in float32; every later convolution and the head's layers hold int8 weights (per "
                        "channel) and run LiteRT's dynamic-range kernels: each quantizes its float input to int8 on "
                        "every invoke from that input's own range and multiplies in int8, so no activation range is "
                        "calibrated in advance. Chosen because the calibrated integer backbone lost more accuracy "
                        "than freeze.max_int8_drop allows for this model",
    "float_backbone": "the whole feature layer (spectral frontend and speech-embedding backbone) runs in float32: "
                      "the integer backbone lost more accuracy than freeze.max_int8_drop allows for this model; "
                      "only the classifier head runs in int8",
}  # fmt: skip
CALIBRATION_CLIPS = 200
_MAC_OPS = {"CONV_2D": 0, "DEPTHWISE_CONV_2D": 3, "FULLY_CONNECTED": 0}  # axis of the weights' output channels


def _representative(clips: np.ndarray, limit: int) -> Callable[[], object]:
    """Generator factory yielding float32 audio [1, S] clips (evenly spread over `clips`) for calibration."""
    clips = np.asarray(clips, np.float32)
    if clips.ndim != 2 or len(clips) == 0:
        raise KwsError(f"int8 conversion needs representative audio [n, samples], got shape {clips.shape}")
    picks = np.linspace(0, len(clips) - 1, min(limit, len(clips))).round().astype(int)

    def gen():
        for i in picks:
            yield [clips[i : i + 1]]

    return gen


def _float_node_names(float_model: bytes, pattern: re.Pattern) -> list[str]:
    """Output tensor names of the ops whose (first fused) name is inside `pattern`'s scope."""
    from ai_edge_litert.interpreter import Interpreter

    interp = Interpreter(model_content=float_model)
    names = []
    for op in interp._get_ops_details():  # noqa: SLF001 - no public per-op API (the debugger uses it too)
        for index in op["outputs"]:
            name = interp._get_tensor_details(index, 0)["name"]  # noqa: SLF001
            if pattern.search(name.split(";")[0]):
                names.append(name)
    return names


def _float_weights(content: bytes, pattern: re.Pattern) -> bytes:
    """`content` (a dynamic-range .tflite) with its int8 weight tensors inside `pattern`'s scope restored to
    float32 (int8 value x its channel's scale): the converter quantizes every large constant, the frontend's mel
    matrix too, and a mel product whose power-spectrum input is quantized per invoke lost 5.5 points on real_dev
    (docs/experiments.md). Uses TensorFlow's flatbuffer_utils (read and write a .tflite's object tree)."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.convert_bytearray_to_object(bytearray(content))
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            data = model.buffers[tensor.buffer].data
            if tensor.type != schema.TensorType.INT8 or data is None or not pattern.search(tensor.name.decode()):
                continue
            values = np.frombuffer(bytes(bytearray(data)), np.int8).reshape(tensor.shape).astype(np.float32)
            scales = np.asarray(tensor.quantization.scale, np.float32)
            shape = [1] * values.ndim
            shape[tensor.quantization.quantizedDimension if len(scales) > 1 else 0] = len(scales)
            model.buffers[tensor.buffer].data = np.frombuffer((values * scales.reshape(shape)).tobytes(), np.uint8)
            tensor.type, tensor.quantization = schema.TensorType.FLOAT32, None
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _converter(saved_model_dir: Path):
    import tensorflow as tf

    return tf.lite.TFLiteConverter.from_saved_model(str(saved_model_dir), signature_keys=["serving_default"])


def _convert_bytes(saved_model_dir: Path, mode: Mode, representative, scheme: Int8Scheme, calibration_clips: int):
    import tensorflow as tf

    converter = _converter(saved_model_dir)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if mode == "float":
        return converter.convert()
    if mode != "int8":
        raise KwsError(f"unknown TFLite mode {mode!r}; expected 'float' or 'int8'")
    if scheme == "dynamic_backbone":  # int8 weights, activations quantized per invoke: no representative set
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        return _float_weights(converter.convert(), FLOAT_SCOPE)
    if representative is None:
        raise KwsError("int8 conversion needs representative audio clips")
    gen = _representative(representative, calibration_clips)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = gen
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    if scheme == "int8_io":
        converter.inference_input_type = converter.inference_output_type = tf.int8
    if scheme in ("int8_io", "float_io"):
        return converter.convert()
    if scheme not in FLOAT_SCOPES:
        raise KwsError(f"unknown int8 scheme {scheme!r}")
    float_model = _convert_bytes(saved_model_dir, "float", None, scheme, 0)
    # a feature layer without an AudioFrontend (a custom one) has no `spectral` ops: it stays float as a whole
    keep_float = _float_node_names(float_model, FLOAT_SCOPES[scheme]) or _float_node_names(float_model, FEATURE_SCOPE)
    if not keep_float:
        raise KwsError("no `frontend` ops found to keep in float; build the model with build_serving_model")
    options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=keep_float)
    with warnings.catch_warnings():  # the debugger checks its debug model with the deprecated tf.lite.Interpreter
        warnings.simplefilter("ignore", UserWarning)
        debugger = tf.lite.experimental.QuantizationDebugger(
            converter=converter, debug_dataset=gen, debug_options=options
        )
    return debugger.get_nondebug_quantized_model()


def convert(
    saved_model_dir: Path,
    out_path: Path,
    mode: Mode,
    representative: np.ndarray | None = None,
    scheme: Int8Scheme = "float_frontend",
    calibration_clips: int = CALIBRATION_CLIPS,
) -> dict:
    """Convert the SavedModel to a builtin-ops-only .tflite (written atomically, the SavedModel's model card
    appended as an associated file) and describe the file."""
    try:
        content = _convert_bytes(Path(saved_model_dir), mode, representative, scheme, calibration_clips)
    except KwsError:
        raise
    except Exception as error:  # the converter raises ConverterError / RuntimeError with long MLIR dumps
        first = (str(error).strip().splitlines() or [type(error).__name__])[0][:300]
        raise KwsError(f"TFLite {mode} conversion failed: {first}") from error
    check_builtin_only(content)
    from pipeline.inference import card_archive, read_saved_model_card

    card = read_saved_model_card(Path(saved_model_dir))  # labels, rate, clip length travel inside the .tflite
    out_path = Path(out_path)
    with atomic_path(out_path, ".tflite") as tmp:
        tmp.write_bytes(content + (card_archive(card) if card else b""))
    info = TfliteModel(out_path).details()
    return {"mode": mode, "scheme": scheme if mode == "int8" else None, **info,
            **({"float_part": FLOAT_PART[scheme]} if mode == "int8" and scheme in FLOAT_PART else {})}  # fmt: skip


def _enum_names(enum: type) -> dict[int, str]:
    return {v: k for k, v in vars(enum).items() if not k.startswith("_")}


def flatbuffer_summary(content: bytes) -> dict:
    """Constant bytes by dtype and the non-builtin (Flex / custom) ops of a .tflite flatbuffer, without running it."""
    from ai_edge_litert import schema_py_generated as schema  # no TensorFlow: `kws inspect` on a .tflite stays light

    model = schema.ModelT.InitFromPackedBuf(content, 0)
    dtype_names = _enum_names(schema.TensorType)
    weights: collections.Counter = collections.Counter()
    custom = set()
    for code in model.operatorCodes:
        if max(code.builtinCode, code.deprecatedBuiltinCode) == schema.BuiltinOperator.CUSTOM:
            custom.add((code.customCode or b"?").decode())
    for graph in model.subgraphs:
        for tensor in graph.tensors:
            data = model.buffers[tensor.buffer].data if tensor.buffer < len(model.buffers) else None
            if data is not None and len(data):
                weights[dtype_names[tensor.type].lower()] += len(data)
    return {"weight_bytes": dict(sorted(weights.items())), "custom_ops": sorted(custom)}


def op_summary(model_path: Path) -> dict:
    """Ops by name and output dtype, and multiply-accumulates by dtype (`int8_dynamic`: a float op on int8 weights,
    LiteRT's dynamic-range kernel), from one delegate-free run on a zero clip."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    plain = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES  # XNNPACK would hide ops inside DELEGATE nodes
    interp = Interpreter(str(model_path), experimental_op_resolver_type=plain)
    interp.allocate_tensors()
    inp = interp.get_input_details()[0]
    interp.set_tensor(inp["index"], np.zeros(inp["shape"], inp["dtype"]))
    interp.invoke()  # dynamic shapes (the batch dimension) are only known after a run

    def tensor(i: int) -> dict:
        return interp._get_tensor_details(i, 0)  # noqa: SLF001 - no public per-op API

    ops: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    macs: collections.Counter = collections.Counter()
    for op in interp._get_ops_details():  # noqa: SLF001
        dtype = np.dtype(tensor(op["outputs"][0])["dtype"]).name if len(op["outputs"]) else "none"
        ops[op["op_name"]][dtype] += 1
        if op["op_name"] in _MAC_OPS:
            out, weight = (np.asarray(tensor(i)["shape"], np.int64) for i in (op["outputs"][0], op["inputs"][1]))
            hybrid = dtype == "float32" and np.dtype(tensor(op["inputs"][1])["dtype"]).name == "int8"
            count = int(np.prod(out) * np.prod(weight) // weight[_MAC_OPS[op["op_name"]]])
            macs["int8_dynamic" if hybrid else dtype] += count
    return {
        "ops": {name: dict(sorted(v.items())) for name, v in sorted(ops.items())},
        "macs": dict(sorted(macs.items())),
        # int8 multiplies, with calibrated ranges (int8, uint8) or with the input quantized per invoke (int8_dynamic)
        "int8_mac_fraction": round(sum(macs[k] for k in ("int8", "uint8", "int8_dynamic")) / max(sum(macs.values()), 1), 3),
    }


def check_builtin_only(content: bytes) -> None:
    """Raise KwsError if the model needs Flex (Select TF) or custom ops."""
    bad = flatbuffer_summary(content)["custom_ops"]
    if bad:
        raise KwsError(f"TFLite model needs non-builtin ops {bad}; only TFLite builtins are allowed")


def _tensor(detail: dict) -> dict:
    scale, zero_point = detail["quantization"]
    return {
        "name": detail["name"],
        "shape": [int(n) for n in detail["shape_signature"]],
        "dtype": np.dtype(detail["dtype"]).name,
        "scale": float(scale),
        "zero_point": int(zero_point),
    }


class TfliteModel:
    """A .tflite run by the LiteRT interpreter on one thread: float audio [B, S] in, float scores [B, C] out."""

    def __init__(self, model_path: Path, num_threads: int = 1):
        from ai_edge_litert.interpreter import Interpreter

        self.path = Path(model_path)
        self.interpreter = Interpreter(model_path=str(self.path), num_threads=num_threads)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]
        self.output = self.interpreter.get_output_details()[0]
        self.clip_samples = int(self.input["shape_signature"][-1])

    def _run_one(self, clip: np.ndarray) -> np.ndarray:
        interp, inp, out = self.interpreter, self.input, self.output
        x = np.asarray(clip, np.float32).reshape(1, self.clip_samples)
        if inp["dtype"] in (np.int8, np.uint8):
            scale, zero = inp["quantization"]
            info = np.iinfo(inp["dtype"])
            x = np.clip(np.round(x / scale + zero), info.min, info.max).astype(inp["dtype"])
        interp.set_tensor(inp["index"], x)
        interp.invoke()
        y = interp.get_tensor(out["index"])
        if out["dtype"] in (np.int8, np.uint8):
            scale, zero = out["quantization"]
            y = (y.astype(np.float32) - zero) * scale
        return y[0].astype(np.float32)

    def predict(self, audio: np.ndarray) -> np.ndarray:
        """Scores [B, C] float32 for audio [B, S] (or one clip [S]), one clip per invoke."""
        audio = np.asarray(audio, np.float32)
        clips = audio[None] if audio.ndim == 1 else audio
        if clips.ndim != 2 or clips.shape[1] != self.clip_samples:
            raise KwsError(f"expected audio [batch, {self.clip_samples}], got shape {audio.shape}")
        if not len(clips):
            return np.zeros((0, int(self.output["shape"][-1])), np.float32)
        return np.stack([self._run_one(c) for c in clips])

    def details(self) -> dict:
        """Path, size, input/output tensors (name, shape, dtype, scale, zero point), ops and weights by dtype."""
        return {
            "path": str(self.path),
            "bytes": self.path.stat().st_size,
            "inputs": [_tensor(self.input)],
            "outputs": [_tensor(self.output)],
            **op_summary(self.path),
            "weight_bytes": flatbuffer_summary(self.path.read_bytes())["weight_bytes"],
        }


def agreement(a_scores: np.ndarray, b_scores: np.ndarray) -> float:
    """Fraction of clips whose top-1 class is the same under both models."""
    a, b = np.asarray(a_scores), np.asarray(b_scores)
    if a.shape != b.shape or a.ndim != 2:
        raise ValueError(f"need two [clips, classes] arrays of one shape, got {a.shape} and {b.shape}")
    return float(np.mean(a.argmax(1) == b.argmax(1))) if len(a) else 1.0


def set_tf_threads(threads: int) -> bool:
    """Size TF's intra/inter-op pools; False when TF already started (then only a fresh process can)."""
    import tensorflow as tf

    try:
        tf.config.threading.set_intra_op_parallelism_threads(threads)
        tf.config.threading.set_inter_op_parallelism_threads(threads)
    except RuntimeError:
        return False
    return tf.config.threading.get_intra_op_parallelism_threads() == threads


def latency_ms(
    predict_one: Callable[[np.ndarray], object], clip: np.ndarray, repeats: int = 50, warmup: int = 5,
    threads: int | None = None,
) -> dict:  # fmt: skip
    """Median and p90 ms of `predict_one(clip[None])` after warm-up; `threads` sizes TF's pools if TF is not running."""
    applied = set_tf_threads(threads) if threads is not None else None
    batch = np.asarray(clip, np.float32).reshape(1, -1)
    for _ in range(warmup):
        predict_one(batch)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        predict_one(batch)
        times.append((time.perf_counter() - start) * 1000.0)
    result = {"median_ms": float(np.median(times)), "p90_ms": float(np.percentile(times, 90)), "repeats": len(times)}
    if threads is not None:
        result.update(tf_threads=threads, tf_threads_applied=applied)
    return result


def int8_gate(float_accuracy: float, int8_accuracy: float, max_drop_points: float, set_name: str = "testing",
              schemes: list[str] | None = None) -> None:
    """Raise KwsError when int8 accuracy (a fraction) is more than `max_drop_points` percentage points below float;
    `schemes`, the int8 schemes freeze tried (the last one kept), are named in the message."""
    for value in (float_accuracy, int8_accuracy):
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"accuracies are fractions in [0, 1], got {value}")
    drop = 100.0 * (float_accuracy - int8_accuracy)
    if drop > max_drop_points:
        raise KwsError(
            f"int8 model loses {drop:.2f} points of accuracy on {set_name} (float {100 * float_accuracy:.2f}%, "
            f"int8 {100 * int8_accuracy:.2f}%), above freeze.max_int8_drop {max_drop_points:g}"
            + (f" (schemes tried: {', '.join(schemes)})" if schemes else "")
        )
