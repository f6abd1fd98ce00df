"""Update compression for the upload: fp16 or int8 of the update (new - global), per array.

Only the difference from the global adapter the client received is encoded:
it is small and centred on zero, so int8 with one float32 scale per array
(symmetric, max-abs) loses little. The server adds the decoded update to the
same global adapter. With SecAgg+ this is not used: the protocol quantizes
and masks the parameters itself (see federated/client_app.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

KINDS = ("none", "fp16", "int8")


@dataclass(frozen=True)
class Encoded:
    kind: str
    arrays: list[np.ndarray]  # what travels: the update per array (+ one scales array for int8)

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays)


def encode(new: list[np.ndarray], base: list[np.ndarray], kind: str) -> Encoded:
    if kind not in KINDS:
        raise ValueError(f"unknown compression {kind!r}; one of {', '.join(KINDS)}")
    if kind == "none":
        return Encoded(kind, [np.asarray(n, np.float32) for n in new])
    deltas = [np.asarray(n, np.float32) - np.asarray(b, np.float32) for n, b in zip(new, base)]
    if kind == "fp16":
        return Encoded(kind, [d.astype(np.float16) for d in deltas])
    scales = np.array([np.abs(d).max() / 127.0 if d.size else 0.0 for d in deltas], np.float32)
    quantized = [np.clip(np.rint(d / s), -127, 127).astype(np.int8) if s > 0 else np.zeros(d.shape, np.int8)
                 for d, s in zip(deltas, scales)]
    return Encoded(kind, quantized + [scales])


def decode(arrays: list[np.ndarray], base: list[np.ndarray], kind: str) -> list[np.ndarray]:
    """The client's new parameters. Malformed input yields malformed output for the validator to reject."""
    if kind not in KINDS:
        raise ValueError(f"unknown compression {kind!r}")
    if kind == "none":
        return [np.asarray(a) for a in arrays]
    if kind == "fp16":
        deltas = [a.astype(np.float32) for a in arrays]
    else:
        *quantized, scales = arrays
        if len(quantized) != len(scales):
            raise ValueError(f"{len(quantized)} int8 arrays but {len(scales)} scales")
        deltas = [q.astype(np.float32) * s for q, s in zip(quantized, scales)]
    if len(deltas) != len(base):
        raise ValueError(f"{len(deltas)} arrays instead of {len(base)}")
    return [b + d if b.shape == d.shape else d for b, d in zip(base, deltas)]


def relative_error(new: list[np.ndarray], base: list[np.ndarray], kind: str) -> float:
    """||decoded - new|| / ||new - base||: how much of the update the encoding loses."""
    decoded = decode(encode(new, base, kind).arrays, base, kind)
    err = sum(float(np.sum((d - n) ** 2)) for d, n in zip(decoded, new))
    size = sum(float(np.sum((n - b) ** 2)) for n, b in zip(new, base))
    return float(np.sqrt(err / size)) if size else 0.0
