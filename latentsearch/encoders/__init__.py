"""Encoders: one small protocol and a registry of named encoders.

An encoder has a ``name``, a ``dim``, a ``modality`` and a ``weights_hash`` (pinned in the
collection's manifest), and ``encode(batch) -> float32 [n, dim]``, L2-normalised when
``normalize`` is set. Built-ins: ``minilm`` (the default text encoder), ``st:PATH`` (any local
sentence-transformers folder) and ``precomputed`` (vectors the user brings). Heavy libraries are
imported only when a model is actually loaded.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from latentsearch.errors import InvalidInputError


@runtime_checkable
class Encoder(Protocol):
    """What latentsearch needs from an encoder."""

    name: str
    modality: str  # "text", "image" or "vector"
    normalize: bool

    @property
    def dim(self) -> int:
        """Length of the vectors this encoder returns."""
        ...

    @property
    def weights_hash(self) -> str | None:
        """A hash identifying the weights, pinned in the manifest (None when not applicable)."""
        ...

    def encode(self, inputs: Sequence[Any], *, batch_size: int = 64) -> np.ndarray:
        """Encode a batch into a float32 array of shape ``(len(inputs), dim)``."""
        ...


EncoderFactory = Callable[[str], Encoder]
_FACTORIES: dict[str, EncoderFactory] = {}
_PREFIX_FACTORIES: dict[str, EncoderFactory] = {}
_CACHE: dict[str, Encoder] = {}
_CACHE_LOCK = threading.Lock()


def register_encoder(name: str, factory: EncoderFactory, *, prefix: bool = False) -> None:
    """Register an encoder by exact name, or for every spec starting with ``name:`` (``prefix``)."""
    (_PREFIX_FACTORIES if prefix else _FACTORIES)[name] = factory


def available_encoders() -> list[str]:
    """Names of the registered encoders (prefix encoders shown as ``name:ARG``)."""
    return sorted(_FACTORIES) + sorted(f"{p}:PATH" for p in _PREFIX_FACTORIES)


def get_encoder(spec: str) -> Encoder:
    """Return the encoder for ``spec``, created once per process and shared (models are big)."""
    with _CACHE_LOCK:
        if spec in _CACHE:
            return _CACHE[spec]
        prefix, _, rest = spec.partition(":")
        if spec in _FACTORIES:
            encoder = _FACTORIES[spec](spec)
        elif rest and prefix in _PREFIX_FACTORIES:
            encoder = _PREFIX_FACTORIES[prefix](rest)
        else:
            raise InvalidInputError(f"unknown encoder {spec!r}: use one of {', '.join(available_encoders())}")
        _CACHE[spec] = encoder
        return encoder


def _register_builtins() -> None:
    from latentsearch.encoders.image import EfficientNetLite0Encoder
    from latentsearch.encoders.precomputed import PrecomputedEncoder
    from latentsearch.encoders.text import SentenceTransformerEncoder

    register_encoder("minilm", _minilm)
    register_encoder("minilm-int8", _minilm_int8)
    register_encoder("efficientnet-lite0", lambda _: EfficientNetLite0Encoder())
    register_encoder("st", SentenceTransformerEncoder, prefix=True)
    register_encoder("precomputed", lambda _: PrecomputedEncoder())
    register_encoder("align", _aligned, prefix=True)
    register_encoder("ae", _autoencoder, prefix=True)


def _autoencoder(path: str) -> Encoder:
    from latentsearch.encoders.autoencoder import AutoencoderEncoder  # imports torch: only when this encoder is used

    return AutoencoderEncoder(path)


def _minilm(_: str) -> Encoder:
    from latentsearch.encoders.minilm import MiniLMEncoder

    return MiniLMEncoder()


def _minilm_int8(_: str) -> Encoder:
    from latentsearch.encoders.minilm import MiniLMInt8Encoder

    return MiniLMInt8Encoder()


def _aligned(folder: str) -> Encoder:
    from latentsearch.encoders.align import AlignedEncoder

    return AlignedEncoder(folder)


_register_builtins()

__all__ = ["Encoder", "available_encoders", "get_encoder", "register_encoder"]
