"""Progress bars for long steps, on one switch.

Every long step draws its bar through :func:`progress_bar`.  The command line turns bars off
(:data:`ENABLED`) when there is neither a log file nor a terminal to draw them on, so that captured error
output holds nothing but the one error line.
"""

from __future__ import annotations

from tqdm import tqdm

#: set by the command line; library callers keep bars unless they pass progress=False
ENABLED = True


def progress_bar(iterable=None, *, enabled: bool = True, **kwargs) -> tqdm:
    """A tqdm bar (updated at most every 2 s) that is drawn only when both ``enabled`` and :data:`ENABLED`."""
    kwargs.setdefault("mininterval", 2.0)
    return tqdm(iterable, disable=not (enabled and ENABLED), **kwargs)
