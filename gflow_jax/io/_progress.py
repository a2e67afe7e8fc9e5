"""Progress bars: tqdm on the host, a bar for ``lax.scan`` loops driven from inside jit, and a
labelled progress meter for diffrax solves.

Bars are for terminals: :func:`progress_enabled` turns them off when stderr is not one (a log
file, a pipe, a batch job), where tqdm's redraws would flood the output.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

_bars: dict[str, Any] = {}
_FORMAT = "{desc}: {percentage:3.0f}%|{bar:24}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}]"


def progress_enabled(requested: bool, stream=None) -> bool:
    """``requested``, unless ``stream`` (default stderr) is not a terminal."""
    stream = sys.stderr if stream is None else stream
    isatty = getattr(stream, "isatty", None)
    return bool(requested) and bool(isatty and isatty())


def progress_bar(total: int | None = None, desc: str = "", *, enabled: bool = True, **kwargs):
    """A labelled tqdm bar (``disable=not enabled``); ``leave=False`` unless told otherwise."""
    from tqdm.auto import tqdm

    kwargs.setdefault("leave", False)
    if total is not None and desc:
        kwargs.setdefault("bar_format", _FORMAT)
    return tqdm(total=total, desc=desc, disable=not enabled, **kwargs)


def _tick(desc: str, total: int) -> None:
    bar = _bars.get(desc)
    if bar is None or bar.n >= bar.total:
        bar = _bars[desc] = progress_bar(total, desc, unit="save")
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


@functools.cache
def _labelled_meter_class():
    import diffrax
    import equinox as eqx

    class LabelledTqdmMeter(diffrax.TqdmProgressMeter):
        """diffrax's tqdm meter with a label (its own bar shows only a percentage)."""

        desc: str = eqx.field(static=True, default="gradient flow (diffrax)")

        def _init_bar(self):
            from tqdm.auto import tqdm

            return tqdm(
                total=100,
                desc=self.desc,
                unit="%",
                leave=False,
                bar_format="{desc}: {percentage:3.0f}% of s |{bar:24}| [{elapsed}<{remaining}]",
            )

    return LabelledTqdmMeter


def flow_progress_meter(enabled: bool, desc: str = "gradient flow (diffrax)"):
    """The diffrax progress meter of a solve: a labelled tqdm bar over the flow time, or
    ``diffrax.NoProgressMeter()`` when ``enabled`` is false."""
    import diffrax

    return _labelled_meter_class()(desc=desc) if enabled else diffrax.NoProgressMeter()
