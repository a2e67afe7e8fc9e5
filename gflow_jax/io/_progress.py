"""Progress bars: tqdm on the host, and a bar for ``lax.scan`` loops driven from inside jit.

(diffrax solves use ``diffrax.TqdmProgressMeter``.)
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_bars: dict[str, Any] = {}


def progress_bar(total: int | None = None, desc: str = "", *, enabled: bool = True, **kwargs):
    """A tqdm bar (``disable=not enabled``); ``leave=False`` unless told otherwise."""
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    return tqdm(total=total, desc=desc, disable=not enabled, **kwargs)


def _tick(desc: str, total: int) -> None:
    bar = _bars.get(desc)
    if bar is None or bar.n >= bar.total:
        bar = _bars[desc] = progress_bar(total, desc)
    bar.update(1)
    if bar.n >= bar.total:
        bar.close()


def scan_progress(body: Callable, length: int, desc: str, enabled: bool) -> Callable:
    """Wrap a scan body so each iteration advances a tqdm bar of ``length`` ticks.

    The bar lives on the host and is driven by ``jax.debug.callback``; the wrapped body computes
    exactly what ``body`` does. With ``enabled=False`` the body is returned unchanged (no host
    callback in the compiled loop).
    """
    if not enabled:
        return body
    import jax

    def wrapped(carry, xs):
        out = body(carry, xs)
        jax.debug.callback(lambda: _tick(desc, length))
        return out

    return wrapped
