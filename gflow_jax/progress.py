"""A progress bar for ``lax.scan`` loops (diffrax solves use ``diffrax.TqdmProgressMeter``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax

__all__ = ["scan_progress"]

_bars: dict[str, Any] = {}


def _tick(desc: str, total: int) -> None:
    from tqdm.auto import tqdm

    bar = _bars.get(desc)
    if bar is None or bar.n >= bar.total:
        bar = _bars[desc] = tqdm(total=total, desc=desc, leave=False)
    bar.update(1)
    if bar.n >= bar.total:
        bar.close()


def scan_progress(body: Callable, length: int, desc: str, enabled: bool) -> Callable:
    """Wrap a scan body so each iteration advances a tqdm bar of ``length`` ticks.

    The bar lives on the host and is driven by ``jax.debug.callback``; the wrapped body computes
    exactly what ``body`` does. With ``enabled=False`` the body is returned unchanged.
    """
    if not enabled:
        return body

    def wrapped(carry, xs):
        out = body(carry, xs)
        jax.debug.callback(lambda: _tick(desc, length))
        return out

    return wrapped
