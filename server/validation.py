"""Rejecting malformed updates, where each check can see them.

What is checked where:
- On the device (client_app.py): its own update's names, shapes and finite
  values before it is sent; with central DP, Flower's `fixedclipping_mod`
  bounds its norm to the clipping norm before masking or compression.
- On the server, without SecAgg+: every update, after decompression, against
  the global adapter's layout (the client's layout fingerprint, array count,
  shapes), for NaN/Inf, and for its norm (the clipping norm with DP, else
  `max_update_norm`). A rejected update is logged with its reason and left out
  of the average; the round goes on with the others.
- On the server, with SecAgg+: individual updates are never visible; Flower's
  workflow hands the strategy the unmasked mean as every client's result, so
  the same checks run on the mean: a malformed or oversized contribution
  shows as a mean that fails them, and the round's update is then rejected
  as a whole (the global adapter stays as it was).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from flwr.common import FitRes, parameters_to_ndarrays

from tidings.federated import compression
from tidings.federated.adapter import AdapterLayout, update_norm

log = logging.getLogger("tidings")

# SecAgg+'s stochastic quantization and float rounding move a clipped update's norm a little.
NORM_SLACK = 1.01


@dataclass(frozen=True)
class Rejection:
    client: str
    reason: str


def decoded_update(fit_res: FitRes, global_values: list[np.ndarray]) -> list[np.ndarray]:
    kind = str(fit_res.metrics.get("compression", "none"))
    return compression.decode(parameters_to_ndarrays(fit_res.parameters), global_values, kind)


def check_update(values: list[np.ndarray], global_values: list[np.ndarray], layout: AdapterLayout,
                 fingerprint: str | None, norm_bound: float) -> str | None:
    """Why this update must be rejected, or None."""
    if fingerprint is not None and fingerprint != layout.fingerprint:
        return f"adapter layout {fingerprint} is not the global {layout.fingerprint}"
    problem = layout.problems(values)
    if problem:
        return problem
    norm = update_norm(values, global_values)
    if norm > norm_bound * NORM_SLACK:
        return f"update norm {norm:.4g} above the bound {norm_bound:.4g}"
    return None
