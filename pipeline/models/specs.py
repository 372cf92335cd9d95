"""Typed hyper-parameters of every model, one frozen class per architecture (no TensorFlow import here)."""

from __future__ import annotations

from typing import Annotated, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field

Rate = Annotated[float, Field(ge=0, lt=1)]


class _Spec(BaseModel):
    """Base: unknown keys are errors and a spec cannot be mutated."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class SingleFcSpec(_Spec):
    """TF speech_commands `single_fc`: flatten -> one dense layer; a sanity check, not a real model."""

    name: Literal["single_fc"] = "single_fc"


class ConvSpec(_Spec):
    """TF speech_commands `conv` (cnn-trad-fpool3, Sainath & Parada 2015); `dropout` is TF's dropout_rate."""

    name: Literal["conv"] = "conv"
    filters: int = Field(64, ge=1, le=512)
    dropout: Rate = 0.5


class LowLatencyConvSpec(_Spec):
    """TF speech_commands `low_latency_conv` (cnn-one-fstride4): one full-time-span conv, three dense layers."""

    name: Literal["low_latency_conv"] = "low_latency_conv"
    filters: int = Field(186, ge=1, le=1024)
    fc_units: int = Field(128, ge=1, le=4096)
    dropout: Rate = 0.5


class LowLatencySvdfSpec(_Spec):
    """TF speech_commands `low_latency_svdf` (Nakkiran et al. 2015): rank-constrained SVDF layer, three dense."""

    name: Literal["low_latency_svdf"] = "low_latency_svdf"
    units: int = Field(1280, ge=1, le=8192)
    rank: int = Field(2, ge=1, le=16)
    fc_units: int = Field(256, ge=1, le=4096)
    dropout: Rate = 0.5


class TinyConvSpec(_Spec):
    """TF speech_commands `tiny_conv`: one strided conv and a dense layer, sized for microcontrollers."""

    name: Literal["tiny_conv"] = "tiny_conv"
    filters: int = Field(8, ge=1, le=256)
    dropout: Rate = 0.5


class DsCnnSpec(_Spec):
    """Depthwise-separable CNN, DS-CNN-S-like at the defaults (Zhang et al. 2017, arXiv:1711.07128)."""

    name: Literal["ds_cnn"] = "ds_cnn"
    filters: int = Field(64, ge=1, le=1024)
    blocks: int = Field(4, ge=1, le=16)
    dropout: Rate = 0.2


class BcResNetSpec(_Spec):
    """Broadcasted residual network BC-ResNet-`scale` (Kim et al. 2021, arXiv:2106.04140)."""

    name: Literal["bc_resnet"] = "bc_resnet"
    scale: int = Field(1, ge=1, le=8)
    sub_bands: int = Field(5, ge=1, le=20)
    dropout: Rate = 0.1


class EmbeddingHeadSpec(_Spec):
    """A small head on the frozen speech embedding's [T, 96] sequence (Lin et al. 2020, arXiv:2002.01322)."""

    name: Literal["embedding_head"] = "embedding_head"
    head: Literal["pool", "conv"] = "conv"
    filters: int = Field(64, ge=1, le=512)
    kernel: int = Field(3, ge=1, le=9)
    dropout: Rate = 0.3
    l2: float = Field(1e-3, ge=0)
    heads: int = Field(1, ge=1, le=8)  # independent heads whose logits are averaged (an ensemble in one model)


ModelSpec = Annotated[
    SingleFcSpec | ConvSpec | LowLatencyConvSpec | LowLatencySvdfSpec | TinyConvSpec | DsCnnSpec | BcResNetSpec
    | EmbeddingHeadSpec,
    Field(discriminator="name"),
]

MODEL_NAMES: tuple[str, ...] = tuple(
    get_args(spec.model_fields["name"].annotation)[0] for spec in get_args(get_args(ModelSpec)[0])
)
