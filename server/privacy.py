"""Privacy accounting for central DP (Gaussian noise on the mean of clipped updates), with dp-accounting.

Each round is one Gaussian mechanism with noise multiplier z on the sum of
clipped updates (the server adds std z*C/m to the mean of m updates clipped
to norm C, i.e. std z*C to their sum), applied to a sample of the population.
Sampling is accounted as Poisson with rate q = sampled / population, the
standard approximation for a fixed-size random sample (DP-FedAvg, McMahan et
al. 2018); with q = 1 there is no amplification. Rounds compose under Rényi
DP. The history of (z, q) per round travels with every adapter version, so a
restarted or rolled-back server keeps counting: privacy spent is never
refunded.
"""

from __future__ import annotations

from collections.abc import Sequence

from dp_accounting import dp_event, rdp

# Fractional orders below 2 make dp-accounting's series fail to converge at small q (it then drops them, noisily).
ORDERS = [2 + x / 4.0 for x in range(0, 40)] + list(range(12, 64)) + [128, 256, 512]


def epsilon(history: Sequence[tuple[float, float]], delta: float) -> float:
    """ε spent after these rounds, each (noise multiplier, sampling rate), at this δ; inf without noise."""
    if not history:
        return 0.0
    if any(z <= 0 for z, _ in history):
        return float("inf")
    accountant = rdp.RdpAccountant(ORDERS)
    for (z, q), count in _runs(history):
        event = dp_event.GaussianDpEvent(z)
        accountant.compose(event if q >= 1 else dp_event.PoissonSampledDpEvent(q, event), count)
    return float(accountant.get_epsilon(delta))


def _runs(history: Sequence[tuple[float, float]]) -> list[tuple[tuple[float, float], int]]:
    """Consecutive identical rounds grouped: composing a run at once is much faster."""
    runs: list[tuple[tuple[float, float], int]] = []
    for item in history:
        if runs and runs[-1][0] == tuple(item):
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((tuple(item), 1))
    return runs
