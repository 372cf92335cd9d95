"""Model registry: `MODELS[name](spec, (frames, bins), classes)` builds a Keras model from features to logits.

Importing this package stays light (pipeline.config imports the specs): the architecture modules, and with
them Keras, load on first use of `MODELS` or `build_model`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from pipeline.errors import ConfigError
from pipeline.models.specs import MODEL_NAMES, ModelSpec

if TYPE_CHECKING:
    import keras

Builder = Callable[[Any, tuple[int, int], int], "keras.Model"]

__all__ = ["MODELS", "MODEL_NAMES", "ModelSpec", "build_model"]


@cache
def _registry() -> dict[str, Builder]:
    """One module per architecture, named after the model, each exposing `build`."""
    return {name: importlib.import_module(f"{__name__}.{name}").build for name in MODEL_NAMES}


def __getattr__(attr: str) -> Any:
    if attr == "MODELS":
        return _registry()
    raise AttributeError(f"module {__name__!r} has no attribute {attr!r}")


def _spec(spec: Any) -> Any:
    """A spec object as is, or a mapping (e.g. from YAML) validated into one."""
    name = spec.get("name") if isinstance(spec, Mapping) else getattr(spec, "name", None)
    if name not in MODEL_NAMES:
        raise ConfigError(f"train.model.name: unknown model {name!r}; valid: {', '.join(MODEL_NAMES)}")
    if not isinstance(spec, Mapping):
        return spec
    try:
        return TypeAdapter(ModelSpec).validate_python(spec)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(p) for p in first["loc"][1:]) or "<root>"
        raise ConfigError(f"train.model.{where}: {first['msg']}") from None


def build_model(spec: ModelSpec | Mapping[str, Any], input_shape: tuple[int, int], num_classes: int) -> keras.Model:
    """Build the architecture `spec.name`: float32 [batch, frames, bins] -> logits [batch, num_classes], no softmax."""
    spec = _spec(spec)
    frames, bins = (int(n) for n in input_shape)
    if frames < 1 or bins < 1 or num_classes < 1:
        raise ConfigError(f"{spec.name}: need positive input shape and classes, got {input_shape} and {num_classes}")
    return _registry()[spec.name](spec, (frames, bins), int(num_classes))
