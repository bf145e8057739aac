"""MemoryStore: the state of one process. The same rules as the Redis store's scripts.

Memory stays bounded: windows and leases exist per configured scope (keys, providers),
leases per scope are capped by its max_concurrent, and usage keeps two months.
"""

from __future__ import annotations

import time

from gateway.stores import (
    USAGE_FIELDS,
    Admission,
    Budget,
    Check,
    Settlement,
    WindowState,
)


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class MemoryStore:
    def __init__(self) -> None:
        self._windows: dict[tuple[str, str], list[int]] = {}  # (scope, field) -> [start, count]
        self._leases: dict[str, dict[str, int]] = {}  # scope -> {lease id: expires at}
        self._usage: dict[tuple[str, str], dict[str, int]] = {}  # (month, scope) -> fields
        self._month = ""

    async def admit(
        self,
        checks: tuple[Check, ...],
        budgets: tuple[Budget, ...],
        tokens: int,
        lease_id: str,
        lease_ms: int,
        month: str,
    ) -> Admission:
        now = now_ms()
        for budget in budgets:
            spent = self._usage.get((month, budget.scope), {}).get("cost_nano", 0)
            if spent >= budget.limit_nano:
                return Admission(False, refused_budget=budget)
        states: list[WindowState] = []
        for check in checks:
            for window in check.windows:
                span = window.seconds * 1000
                start, count = self._windows.get((check.scope, window.field), (0, 0))
                if not start or now >= start + span:
                    start, count = now, 0
                cost = tokens if window.tokens else 1
                if count + cost > window.limit:
                    retry = start + span - now
                    return Admission(False, refused_check=check, refused_window=window,
                                     retry_ms=retry)  # fmt: skip
                states.append(WindowState(window, check, start, window.limit - count - cost,
                                          start + span - now))  # fmt: skip
            if check.max_concurrent is not None:
                leases = self._leases.setdefault(check.scope, {})
                for held, expires in list(leases.items()):
                    if expires <= now:
                        del leases[held]
                if len(leases) >= check.max_concurrent:
                    return Admission(False, refused_check=check, concurrency=True, retry_ms=1000)
        for state in states:
            cost = tokens if state.window.tokens else 1
            slot = self._windows.get((state.check.scope, state.window.field))
            if slot is None or slot[0] != state.start_ms:
                slot = self._windows[(state.check.scope, state.window.field)] = [
                    state.start_ms, 0
                ]  # fmt: skip
            slot[1] += cost
        for check in checks:
            if check.max_concurrent is not None:
                self._leases[check.scope][lease_id] = now + lease_ms
        return Admission(True, states)

    async def settle(self, settlement: Settlement, month: str) -> dict[str, int]:
        for state, delta in settlement.token_windows:
            slot = self._windows.get((state.check.scope, state.window.field))
            if slot is not None and slot[0] == state.start_ms:  # the same window instance
                slot[1] = max(0, slot[1] + delta)
        for scope in settlement.leases:
            self._leases.get(scope, {}).pop(settlement.lease_id, None)
        spent: dict[str, int] = {}
        usage = settlement.usage
        if usage is None:
            return spent
        if month != self._month:
            # A new month: keep only this one and the last, so memory stays bounded.
            keep = (self._month, month)
            self._usage = {k: v for k, v in self._usage.items() if k[0] in keep}
            self._month = month
        for scope in usage.scopes:
            row = self._usage.setdefault((month, scope), dict.fromkeys(USAGE_FIELDS, 0))
            row["requests"] += 1
            row["prompt_tokens"] += usage.prompt_tokens
            row["completion_tokens"] += usage.completion_tokens
            row["cost_nano"] += usage.cost_nano
            row["unpriced"] += 0 if usage.priced else 1
            spent[scope] = row["cost_nano"]
        return spent

    async def usage(self, scopes: list[str], month: str) -> dict[str, dict[str, int]]:
        empty = dict.fromkeys(USAGE_FIELDS, 0)
        return {scope: dict(self._usage.get((month, scope), empty)) for scope in scopes}

    async def aclose(self) -> None:
        return None
