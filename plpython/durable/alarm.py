"""The per-step self-interrupt: a POSIX timer that cancels this backend's statement.

A step with a timeout arms a one-shot ``timer_create(CLOCK_MONOTONIC)`` timer whose
expiry sends SIGINT to the worker's own process: what ``pg_cancel_backend()`` sends.
PostgreSQL's SIGINT handler sets QueryCancelPending, and the step's statement fails
with 57014 at its next CHECK_FOR_INTERRUPTS (``pg_sleep`` included), so a timeout
holds without another worker. Python code that makes no database call is not
interrupted until its next call. No Python signal handler is installed (PostgreSQL's
own handler stays in place), and neither SIGALRM nor ``setitimer`` is touched
(PostgreSQL uses them for its own timeouts).

The timer is reached through ``ctypes`` in the C library (Linux only; glibc before
2.34 keeps it in librt). Where it is missing, :func:`arm` returns None and timeouts
are left to the housekeeping pass of other workers.
"""

from __future__ import annotations

import ctypes
import signal
import sys
from typing import Any

__all__ = ["StepAlarm", "absorb_cancel", "arm", "available"]

CLOCK_MONOTONIC = 1
SIGEV_SIGNAL = 0
SIGEVENT_SIZE = 64  # sizeof(struct sigevent) on every Linux architecture
QUERY_CANCELED = "57014"
NANOSECONDS = 1_000_000_000


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class _Sigevent(ctypes.Structure):
    _fields_ = [
        ("sigev_value", ctypes.c_void_p),  # union sigval
        ("sigev_signo", ctypes.c_int),
        ("sigev_notify", ctypes.c_int),
        ("_rest", ctypes.c_byte * (SIGEVENT_SIZE - ctypes.sizeof(ctypes.c_void_p) - 8)),
    ]


class _PosixTimers:
    """``timer_create``, ``timer_settime`` and ``timer_delete`` of the C library."""

    def __init__(self, library: Any):
        self.create = library.timer_create
        self.create.argtypes = [
            ctypes.c_int,
            ctypes.POINTER(_Sigevent),
            ctypes.POINTER(ctypes.c_void_p),
        ]
        self.settime = library.timer_settime
        self.settime.argtypes = [
            ctypes.c_void_p,
            ctypes.c_int,
            ctypes.POINTER(_Itimerspec),
            ctypes.POINTER(_Itimerspec),
        ]
        self.delete = library.timer_delete
        self.delete.argtypes = [ctypes.c_void_p]
        for function in (self.create, self.settime, self.delete):
            function.restype = ctypes.c_int


_timers: _PosixTimers | None = None
_loaded = False


def _load() -> _PosixTimers | None:
    """The C library's timer functions, or None where it has none (looked up once)."""
    global _timers, _loaded
    if not _loaded:
        _loaded = True
        if sys.platform.startswith("linux"):
            for name in (None, "librt.so.1"):
                try:
                    _timers = _PosixTimers(ctypes.CDLL(name, use_errno=True))
                    break
                except (OSError, AttributeError):
                    continue
    return _timers


def available() -> bool:
    """True when steps can interrupt themselves (POSIX timers reachable)."""
    return _load() is not None


def _timespec(seconds: float) -> _Timespec:
    """``seconds`` as a timespec, at least 1 ns (a zero value would disarm)."""
    total = max(1, int(seconds * NANOSECONDS))
    return _Timespec(total // NANOSECONDS, total % NANOSECONDS)


class StepAlarm:
    """One armed one-shot timer; :meth:`disarm` stops it and tells whether it fired."""

    def __init__(self, timers: _PosixTimers, timer_id: ctypes.c_void_p):
        self._timers = timers
        self._timer_id: ctypes.c_void_p | None = timer_id
        self.fired = False

    def disarm(self) -> bool:
        """Stop and delete the timer; True if it expired (its signal was sent).

        The kernel reports the time left atomically with the stop: zero means the
        expiry happened and the signal is pending or delivered, so the caller must
        take the interrupt (see :func:`absorb_cancel`). Calling it again is harmless.
        """
        if self._timer_id is None:
            return self.fired
        timer_id, self._timer_id = self._timer_id, None
        old = _Itimerspec()
        stopped = self._timers.settime(
            timer_id, 0, ctypes.byref(_Itimerspec()), ctypes.byref(old)
        )
        self._timers.delete(timer_id)
        left = old.it_value
        self.fired = stopped == 0 and left.tv_sec == 0 and left.tv_nsec == 0
        return self.fired


def arm(seconds: float, signo: int = signal.SIGINT) -> StepAlarm | None:
    """Send ``signo`` (SIGINT: a query cancel) to this process in ``seconds``.

    Returns None, and arms nothing, where POSIX timers are not available or the
    timer cannot be created: the caller goes on without a self-interrupt.
    """
    timers = _load()
    if timers is None:
        return None
    event = _Sigevent(sigev_signo=signo, sigev_notify=SIGEV_SIGNAL)
    timer_id = ctypes.c_void_p()
    if timers.create(CLOCK_MONOTONIC, ctypes.byref(event), ctypes.byref(timer_id)):
        return None
    alarm = StepAlarm(timers, timer_id)
    when = _Itimerspec(it_value=_timespec(seconds))
    if timers.settime(timer_id, 0, ctypes.byref(when), None):
        timers.delete(timer_id)
        return None
    return alarm


def absorb_cancel(db: Any) -> None:
    """Take a query cancel still pending in this backend (after the timer fired).

    A statement that reaches CHECK_FOR_INTERRUPTS consumes the pending cancel and
    fails with 57014 in its own subtransaction (every ``plpy.execute`` has one), so
    the interrupt cannot reach a later statement. Any other error propagates.
    """
    try:
        db.execute("select 1")
    except Exception as exc:  # plpy.SPIError
        if getattr(exc, "sqlstate", None) != QUERY_CANCELED:
            raise
