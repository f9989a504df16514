"""Stopping a fit part-way: the caller's check, asked at each step of a long fit.

A cancelled training job must give its slot back at once, not when a minute of fitting ends.
``fit_head`` runs the whole fit on one thread under :func:`stoppable`, and the loops that can
run long (cross-validation folds, candidates, holdout rounds, training epochs) call
:func:`checkpoint`, which raises :class:`FitStopped` once the caller's check says so. A context
variable rather than a parameter keeps ``Head.fit(X, y)`` the same for every kind.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: Asked between steps of a fit; True stops it. Called on the fitting thread, so it must be
#: cheap and thread-safe.
StopCheck = Callable[[], bool]

_check: ContextVar[StopCheck | None] = ContextVar("graft_stop_check", default=None)


class FitStopped(Exception):
    """The caller's check asked the fit to stop: nothing was fitted."""


@contextmanager
def stoppable(check: StopCheck | None) -> Iterator[None]:
    """Within this block, :func:`checkpoint` asks ``check`` (none: whatever an enclosing block
    asks, so a caller can wrap several steps once; outside any, a fit is never stopped)."""
    if check is None:
        yield
        return
    token = _check.set(check)
    try:
        yield
    finally:
        _check.reset(token)


def checkpoint() -> None:
    """Raise :class:`FitStopped` if the fit's caller wants it stopped."""
    check = _check.get()
    if check is not None and check():
        raise FitStopped()
