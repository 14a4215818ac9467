"""The fleet inventory file: which devices exist, for the agent and for later replays.

A JSON list with one device object per line, so that diffs between two inventories stay readable.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import orjson

from simulators.files import write_atomic
from simulators.fleet import Device, Fleet

# Field name -> accepted JSON types (Device's annotations are strings under PEP 563).
_TYPES: dict[str, tuple[type, ...]] = {"str": (str,), "int": (int,), "float": (int, float)}
_FIELDS = {f.name: _TYPES[str(f.type)] for f in dataclasses.fields(Device)}


def write_inventory(fleet: Fleet, path: Path | str) -> None:
    lines = b",\n".join(orjson.dumps(dataclasses.asdict(d)) for d in fleet)
    write_atomic(path, b"[\n" + lines + b"\n]\n" if lines else b"[]\n")


def load_inventory(path: Path | str) -> Fleet:
    raw = orjson.loads(Path(path).read_bytes())
    if not isinstance(raw, list):
        raise ValueError(f"{path}: an inventory is a JSON list of devices")
    return Fleet(tuple(_device(entry, path, i) for i, entry in enumerate(raw)))


def _device(entry: object, path: Path | str, index: int) -> Device:
    if not isinstance(entry, dict) or set(entry) != set(_FIELDS):
        raise ValueError(f"{path}: device #{index} must have exactly the keys {sorted(_FIELDS)}")
    for key, types in _FIELDS.items():
        value = entry[key]
        if not isinstance(value, types) or isinstance(value, bool):
            raise ValueError(f"{path}: device #{index}: {key} = {value!r} has the wrong type")
    return Device(**entry)
