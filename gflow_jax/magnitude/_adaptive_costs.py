"""The cost model of the adaptive CPU magnitude engine (:mod:`gflow_jax.magnitude._adaptive`):
seconds per factorisation and per CG iteration as the fastest timings seen, and the iterations
expected at the next scale."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np


@dataclass
class Clock:
    """Running estimates (seconds): one factorisation per precision, one iteration per kind
    (``0`` plain CG, ``32``/``64`` preconditioned by a factor of that precision). The fastest
    observation is used: on a shared machine other processes only ever add time, and the
    decisions should follow the costs, not that noise."""

    m: int
    factor: dict = field(default_factory=lambda: {32: [], 64: []})
    iteration: dict = field(default_factory=lambda: {0: [], 32: [], 64: []})

    def t_factor(self, bits: int) -> float:
        seen = self.factor[bits] or self.factor[96 - bits]
        if seen:
            scale = 1.0 if self.factor[bits] else (0.5 if bits == 32 else 2.0)
            return float(np.min(seen)) * scale
        return self.m**3 / 3 / (4e10 if bits == 32 else 2e10)

    def t_iter(self, kind: int) -> float:
        if self.iteration[kind]:
            return float(np.min(self.iteration[kind]))
        cg = float(np.min(self.iteration[0])) if self.iteration[0] else 8 * self.m**2 / 1e10
        return {0: 1.0, 32: 1.5, 64: 2.0}[kind] * cg


def predict_iterations(counts: list) -> float:
    """Iterations expected at the next scale from the last counts (growth never negative)."""
    if not counts:
        return 0.0
    if len(counts) == 1:
        return 1.25 * counts[-1]
    return counts[-1] + max(counts[-1] - counts[-2], 0)
