"""CircuitBreaker: stop calling an upstream that keeps failing, and find out when it is back.

closed → open after `failures` consecutive failures, or when `failure_rate` of the calls
in the last `window_seconds` failed (at least `min_requests` of them). Open: calls fail
fast. After `cooldown_seconds`, half-open: one call goes through as a probe; its success
closes the circuit, its failure opens it again. Per process (each replica learns for
itself, which is what a breaker protecting its own connections should do).
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable

from gateway.config import BreakerConfig

CLOSED, HALF_OPEN, OPEN = "closed", "half_open", "open"
STATE_VALUES = {CLOSED: 0, HALF_OPEN: 1, OPEN: 2}


class CircuitBreaker:
    def __init__(
        self,
        settings: BreakerConfig,
        on_change: Callable[[str, str, str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.state = CLOSED
        self.reason = ""
        self._on_change = on_change
        self._clock = clock
        self._consecutive = 0
        self._calls: deque[tuple[float, bool]] = deque()  # (when, failed) in the window
        self._failed_in_window = 0
        self._opened_at = 0.0
        self._probing = False

    def allow(self) -> bool:
        """May a call go out now? (Half-open lets exactly one probe through.)"""
        if not self.settings.enabled or self.state == CLOSED:
            return True
        if self.state == OPEN:
            if self._clock() - self._opened_at < self.settings.cooldown_seconds:
                return False
            self._move(HALF_OPEN, "cooldown over: probing")
        if self._probing:
            return False
        self._probing = True
        return True

    @property
    def retry_in(self) -> float:
        """Seconds until an open circuit lets a probe through."""
        left = self.settings.cooldown_seconds - (self._clock() - self._opened_at)
        return max(left, 0.0) if self.state == OPEN else 0.0

    def record(self, failed: bool, why: str = "") -> None:
        if not self.settings.enabled:
            return
        now = self._clock()
        if self.state == HALF_OPEN:
            self._probing = False
            if failed:
                self._open(now, f"probe failed: {why}")
            else:
                self._reset()
                self._move(CLOSED, "probe succeeded")
            return
        self._consecutive = self._consecutive + 1 if failed else 0
        self._calls.append((now, failed))
        self._failed_in_window += failed
        floor = now - self.settings.window_seconds
        while self._calls and self._calls[0][0] < floor:
            self._failed_in_window -= self._calls.popleft()[1]
        if self.state != CLOSED or not failed:
            return
        s = self.settings
        if self._consecutive >= s.failures:
            self._open(now, f"{self._consecutive} consecutive failures, the last: {why}")
        elif len(self._calls) >= s.min_requests:
            rate = self._failed_in_window / len(self._calls)
            if rate >= s.failure_rate:
                self._open(now, f"{rate:.0%} of {len(self._calls)} calls failed, the last: {why}")

    def _open(self, now: float, reason: str) -> None:
        self._opened_at = now
        self._move(OPEN, reason)

    def _reset(self) -> None:
        self._consecutive = 0
        self._calls.clear()
        self._failed_in_window = 0

    def _move(self, state: str, reason: str) -> None:
        before, self.state, self.reason = self.state, state, reason
        if self._on_change is not None:
            self._on_change(before, state, reason)
