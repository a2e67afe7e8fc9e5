"""What every benchmark prints around its timings: the load average, with a warning above 1
(standard library only: the magnipy worker imports it in an environment without JAX)."""

from __future__ import annotations

import os


def load_line(when: str) -> str:
    """The 1-, 5- and 15-minute load averages, with a warning when the first is above 1."""
    load = os.getloadavg()
    text = f"load average {when}: {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}"
    if load[0] > 1.0:
        text += "   WARNING: load > 1, timings are not those of a quiet machine"
    return text
