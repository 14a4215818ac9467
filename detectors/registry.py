"""One registry of detector types, by name: config tables select detectors by it."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from detectors.base import Detector, DetectorParams

_REGISTRY: dict[str, type[Detector]] = {}

D = TypeVar("D", bound=type[Detector])


class UnknownDetectorError(ValueError):
    """No detector type is registered under this name."""


def register(name: str) -> Callable[[D], D]:
    """Class decorator: register a detector type; a duplicate name is an error."""

    def add(cls: D) -> D:
        if name in _REGISTRY:
            raise ValueError(f"detector type {name!r} is already registered by {_REGISTRY[name]}")
        cls.type_name = name
        _REGISTRY[name] = cls
        return cls

    return add


def detector_types() -> Mapping[str, type[Detector]]:
    _load_builtin()
    return dict(_REGISTRY)


def get(name: str) -> type[Detector]:
    _load_builtin()
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted(_REGISTRY))
        raise UnknownDetectorError(f"unknown detector type {name!r} (known: {known})") from None


def parse_params(name: str, raw: Mapping[str, Any]) -> DetectorParams:
    """Validate raw config values against the type's parameter model (raises ValidationError)."""
    return get(name).params_model.model_validate(dict(raw))


def create(name: str, params: DetectorParams) -> Detector:
    return get(name)(params)


def _load_builtin() -> None:
    # Importing the modules runs their @register decorators.
    from detectors import (  # noqa: F401, PLC0415
        cadence,
        commands,
        drift,
        identity,
        integrity,
        inventory,
        learned,
        seasonal,
        threshold,
    )
