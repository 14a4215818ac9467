"""Plain, JSON-able detector state: encode learned attributes, decode them back, never pickle.

A saved state is data an attacker may have written (a file on disk, a message), so decoding
creates nothing but builtins, `DeviceRef`, `deque`, float arrays and instances of plain slotted
classes that live in the `detectors` package itself; it never imports a module that is not
loaded already.
"""

from __future__ import annotations

import math
import sys
from array import array
from collections import deque
from collections.abc import Mapping
from typing import Any

from detectors.model import DeviceRef

STATE_FORMAT = 1
_FLOAT_CODES = ("d", "f")  # double and single precision float arrays

JSON = Any  # what json.dumps accepts: None, bool, int, float (finite), str, list, dict[str, ...]


class StateError(ValueError):
    """A saved state does not fit this detector (wrong type, version or shape)."""


def encode(value: Any) -> JSON:
    """Encode a learned value into JSON-able data (finite floats, str keys, tagged containers)."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$float": repr(value)}
    if isinstance(value, DeviceRef):
        return {"$device": list(value)}
    if isinstance(value, deque):
        return {"$deque": [encode(v) for v in value], "maxlen": value.maxlen}
    if isinstance(value, array) and value.typecode in _FLOAT_CODES:
        return {"$floats": [encode(v) for v in value], "typecode": value.typecode}
    if isinstance(value, tuple):
        return {"$tuple": [encode(v) for v in value]}
    if isinstance(value, list):
        return [encode(v) for v in value]
    if isinstance(value, dict):
        return {"$map": [[encode(k), encode(v)] for k, v in value.items()]}
    cls = type(value)
    slots = getattr(cls, "__slots__", None)
    if slots is not None and cls.__module__.startswith("detectors."):
        fields = {name: encode(getattr(value, name)) for name in _slot_names(cls)}
        return {"$obj": f"{cls.__module__}:{cls.__qualname__}", "fields": fields}
    raise StateError(f"cannot encode a {cls.__name__} in a detector state")


def decode(data: JSON) -> Any:
    """Reverse of `encode`."""
    if data is None or isinstance(data, bool | int | float | str):
        return data
    if isinstance(data, list):
        return [decode(v) for v in data]
    if not isinstance(data, dict) or len(data) == 0:
        raise StateError(f"unexpected {type(data).__name__} in a detector state")
    if "$float" in data:
        return float(data["$float"])
    if "$device" in data:
        return DeviceRef(*(str(p) for p in data["$device"]))
    if "$deque" in data:
        return deque((decode(v) for v in data["$deque"]), maxlen=data.get("maxlen"))
    if "$tuple" in data:
        return tuple(decode(v) for v in data["$tuple"])
    if "$floats" in data:
        values = [decode(v) for v in data["$floats"]]
        if not all(isinstance(v, float | int) and not isinstance(v, bool) for v in values):
            raise StateError("a float array holds something else than numbers")
        code = data.get("typecode", "d")
        if code not in _FLOAT_CODES:
            raise StateError(f"a float array of an unknown type {str(code)[:8]!r}")
        return array(code, values)
    if "$map" in data:
        return {_hashable(decode(k)): decode(v) for k, v in data["$map"]}
    if "$obj" in data:
        cls = _slotted_class(str(data["$obj"]))
        fields = dict(data["fields"])
        if set(fields) != set(_slot_names(cls)):
            # Saved by another version of the class (a checkpoint from before an upgrade).
            raise StateError(
                f"{cls.__qualname__} saved with {sorted(fields)[:8]}, now has {_slot_names(cls)}"
            )
        obj: Any = object.__new__(cls)
        for name, v in fields.items():
            setattr(obj, name, decode(v))
        return obj
    raise StateError(f"unknown tag in a detector state: {sorted(data)[:3]}")


def encode_learned(obj: object) -> dict[str, JSON]:
    """Every learned attribute of a detector (the names ending in ``_``)."""
    names = sorted(n for n in vars(obj) if n.endswith("_") and not n.startswith("_"))
    return {n: encode(getattr(obj, n)) for n in names}


def wrap(type_name: str, learned: Mapping[str, JSON]) -> dict[str, JSON]:
    return {"format": STATE_FORMAT, "type": type_name, "learned": dict(learned)}


def unwrap(type_name: str, state: Mapping[str, JSON]) -> dict[str, JSON]:
    if state.get("format") != STATE_FORMAT:
        raise StateError(f"state format {state.get('format')!r} is not {STATE_FORMAT}")
    if state.get("type") != type_name:
        raise StateError(f"state of a {state.get('type')!r} detector, not {type_name!r}")
    learned = state.get("learned")
    if not isinstance(learned, dict):
        raise StateError("state has no 'learned' table")
    return learned


def _slot_names(cls: type) -> list[str]:
    names: list[str] = []
    for klass in reversed(cls.__mro__):
        slots = klass.__dict__.get("__slots__", ())
        names.extend([slots] if isinstance(slots, str) else list(slots))
    return [n for n in names if n not in ("__dict__", "__weakref__")]


def _slotted_class(path: str) -> type:
    module_name, _, qualname = path.partition(":")
    module = sys.modules.get(module_name) if module_name.startswith("detectors.") else None
    cls: Any = module
    for part in qualname.split("."):
        cls = getattr(cls, part, None)
    if not isinstance(cls, type) or "__slots__" not in cls.__dict__:
        raise StateError(f"{path} is not a state class of a loaded detector module")
    return cls


def _hashable(key: Any) -> Any:
    return tuple(_hashable(k) for k in key) if isinstance(key, list) else key
