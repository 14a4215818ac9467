"""Counter-based random streams: a draw is a hash of (device key, counter, stream).

Each device owns a random stream without holding any generator state, so a device's telemetry at a
given time is the same whatever else is simulated, in whatever order, and 100,000 devices cost no
memory. Draws are vectorised over numpy arrays.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = 0x9E3779B97F4A7C15
_MASK64 = 2**64 - 1
# Normal draws use their own block of streams so they never alias a uniform stream.
_NORMAL_STREAMS = 1 << 32
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_S30, _S27, _S31, _S11 = np.uint64(30), np.uint64(27), np.uint64(31), np.uint64(11)


def mix(x: np.ndarray) -> np.ndarray:
    """SplitMix64's finaliser: a bijective scramble of 64-bit integers (wraps by design)."""
    x = x.astype(np.uint64, copy=True)
    x ^= x >> _S30
    x *= _M1
    x ^= x >> _S27
    x *= _M2
    x ^= x >> _S31
    return x


def stream_keys(noise_keys: np.ndarray, seed: int) -> np.ndarray:
    """Per-device keys for one run: the same fleet with another seed draws other noise."""
    salt = mix(np.array([seed & _MASK64], dtype=np.uint64))
    return mix(noise_keys.astype(np.uint64) ^ salt)


def uniform(keys: np.ndarray, counter: np.ndarray, stream: int) -> np.ndarray:
    """Uniform draws in [0, 1); `stream` separates independent quantities of one report."""
    # Python ints here: numpy scalars warn on the (intended) 64-bit wrap-around.
    c = counter.astype(np.int64).astype(np.uint64) + np.uint64((stream * _GOLDEN) & _MASK64)
    bits = mix(keys ^ mix(c))
    return (bits >> _S11).astype(np.float64) * (1.0 / 2**53)


def normal(keys: np.ndarray, counter: np.ndarray, stream: int) -> np.ndarray:
    """Standard normal draws (Box-Muller over two derived streams)."""
    u1 = 1.0 - uniform(keys, counter, _NORMAL_STREAMS + 2 * stream)
    u2 = uniform(keys, counter, _NORMAL_STREAMS + 2 * stream + 1)
    return np.sqrt(-2.0 * np.log(u1)) * np.cos(2.0 * np.pi * u2)


def trait(keys: np.ndarray, stream: int) -> np.ndarray:
    """A fixed per-device uniform draw in [0, 1): a hardware trait, the same for every report."""
    return uniform(keys, np.full(keys.shape, -1, dtype=np.int64), stream)
