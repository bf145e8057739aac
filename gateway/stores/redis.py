"""RedisStore: the same rules as MemoryStore, as Lua scripts, so N replicas admit exactly.

Every admission is one EVALSHA: budgets, every window of every scope, and the
concurrency leases are checked and taken in one atomic step, with Redis's own clock.
The `limits` package checks one window per call (a test, then a hit) and has neither
token settlement nor leases, so it cannot give that; these two scripts are our own.

Keys (all under `state.key_prefix`): `rl:<scope>` a hash of windows (`<field>:s` start
ms, `<field>:n` count), `cc:<scope>` a sorted set of leases scored by expiry,
`usage:<YYYY-MM>:<scope>` a hash of the month's usage.
"""

from __future__ import annotations

from typing import Any

from gateway.stores import (
    USAGE_FIELDS,
    Admission,
    Budget,
    Check,
    Outage,
    Settlement,
    WindowState,
)

_ADMIT = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local nb, nc = tonumber(ARGV[1]), tonumber(ARGV[2])
local tokens, lease_id, lease_ms = tonumber(ARGV[3]), ARGV[4], tonumber(ARGV[5])
local a, k = 6, 1
for i = 1, nb do
  local spent = tonumber(redis.call('HGET', KEYS[k], 'cost_nano') or '0')
  if spent >= tonumber(ARGV[a]) then return {2, i, 0, 0} end
  k, a = k + 1, a + 1
end
local out = {0}
local writes, leases = {}, {}
for c = 1, nc do
  local hkey, zkey = KEYS[k], KEYS[k + 1]
  k = k + 2
  local nw, maxcc = tonumber(ARGV[a]), tonumber(ARGV[a + 1])
  a = a + 2
  local longest = 0
  for w = 1, nw do
    local f, span, limit = ARGV[a], tonumber(ARGV[a + 1]), tonumber(ARGV[a + 2])
    local cost = 1
    if ARGV[a + 3] == '1' then cost = tokens end
    a = a + 4
    local v = redis.call('HMGET', hkey, f .. ':s', f .. ':n')
    local start, count = tonumber(v[1] or '0'), tonumber(v[2] or '0')
    if start == 0 or now >= start + span then start, count = now, 0 end
    if count + cost > limit then return {1, c, w, start + span - now} end
    writes[#writes + 1] = {hkey, f, start, count + cost}
    out[#out + 1] = string.format('%d', start)
    out[#out + 1] = limit - count - cost
    out[#out + 1] = start + span - now
    if span > longest then longest = span end
  end
  if longest > 0 then writes[#writes + 1] = {hkey, false, longest} end
  if maxcc >= 0 then
    redis.call('ZREMRANGEBYSCORE', zkey, '-inf', now)
    if redis.call('ZCARD', zkey) >= maxcc then return {3, c, 0, 1000} end
    leases[#leases + 1] = zkey
  end
end
for _, w in ipairs(writes) do
  if w[2] then
    redis.call('HSET', w[1], w[2] .. ':s', string.format('%d', w[3]), w[2] .. ':n', w[4])
  else
    redis.call('PEXPIRE', w[1], w[3])
  end
end
for _, zkey in ipairs(leases) do
  redis.call('ZADD', zkey, now + lease_ms, lease_id)
  redis.call('PEXPIRE', zkey, lease_ms)
end
return out
"""

_SETTLE = """
local nt, nl, lease_id, nu = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], tonumber(ARGV[4])
local a, k = 5, 1
for i = 1, nt do
  local f, start, delta = ARGV[a], ARGV[a + 1], tonumber(ARGV[a + 2])
  a = a + 3
  if redis.call('HGET', KEYS[k], f .. ':s') == start then
    if redis.call('HINCRBY', KEYS[k], f .. ':n', delta) < 0 then
      redis.call('HSET', KEYS[k], f .. ':n', 0)
    end
  end
  k = k + 1
end
for i = 1, nl do
  redis.call('ZREM', KEYS[k], lease_id)
  k = k + 1
end
local out = {}
for i = 1, nu do
  redis.call('HINCRBY', KEYS[k], 'requests', 1)
  redis.call('HINCRBY', KEYS[k], 'prompt_tokens', ARGV[a])
  redis.call('HINCRBY', KEYS[k], 'completion_tokens', ARGV[a + 1])
  redis.call('HINCRBY', KEYS[k], 'unpriced', ARGV[a + 3])
  out[#out + 1] = redis.call('HINCRBY', KEYS[k], 'cost_nano', ARGV[a + 2])
  redis.call('PEXPIRE', KEYS[k], ARGV[a + 4])
  k = k + 1
end
return out
"""

_USAGE_TTL_MS = 62 * 24 * 3600 * 1000  # this month and the last stay readable


class RedisStore:
    def __init__(self, redis: Any, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix
        self._admit = redis.register_script(_ADMIT)
        self._settle = redis.register_script(_SETTLE)
        self._outage = Outage()

    async def _call(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        self._outage.check()
        try:
            return await script(keys=keys, args=args)
        except Exception as exc:  # connection, timeout, script or server errors alike
            raise self._outage.failed(exc) from exc

    def _usage_key(self, month: str, scope: str) -> str:
        return f"{self.prefix}usage:{month}:{scope}"

    async def admit(
        self,
        checks: tuple[Check, ...],
        budgets: tuple[Budget, ...],
        tokens: int,
        lease_id: str,
        lease_ms: int,
        month: str,
    ) -> Admission:
        keys = [self._usage_key(month, b.scope) for b in budgets]
        args: list[Any] = [len(budgets), len(checks), tokens, lease_id, lease_ms]
        args += [b.limit_nano for b in budgets]
        for check in checks:
            keys += [f"{self.prefix}rl:{check.scope}", f"{self.prefix}cc:{check.scope}"]
            maxcc = -1 if check.max_concurrent is None else check.max_concurrent
            args += [len(check.windows), maxcc]
            for w in check.windows:
                args += [w.field, w.seconds * 1000, w.limit, 1 if w.tokens else 0]
        out = await self._call(self._admit, keys, args)
        status = int(out[0])
        if status == 2:
            return Admission(False, refused_budget=budgets[int(out[1]) - 1])
        if status == 1:
            check = checks[int(out[1]) - 1]
            return Admission(False, refused_check=check,
                             refused_window=check.windows[int(out[2]) - 1],
                             retry_ms=int(out[3]))  # fmt: skip
        if status == 3:
            return Admission(False, refused_check=checks[int(out[1]) - 1], concurrency=True,
                             retry_ms=int(out[3]))  # fmt: skip
        states = []
        i = 1
        for check in checks:
            for window in check.windows:
                start, remaining, reset = out[i : i + 3]
                states.append(WindowState(window, check, int(start), int(remaining), int(reset)))
                i += 3
        return Admission(True, states)

    async def settle(self, settlement: Settlement, month: str) -> dict[str, int]:
        usage = settlement.usage
        scopes = usage.scopes if usage else ()
        keys: list[str] = []
        args: list[Any] = [len(settlement.token_windows), len(settlement.leases),
                           settlement.lease_id, len(scopes)]  # fmt: skip
        for state, delta in settlement.token_windows:
            keys.append(f"{self.prefix}rl:{state.check.scope}")
            args += [state.window.field, str(state.start_ms), delta]
        keys += [f"{self.prefix}cc:{scope}" for scope in settlement.leases]
        if usage is not None:
            keys += [self._usage_key(month, scope) for scope in scopes]
            args += [usage.prompt_tokens, usage.completion_tokens, usage.cost_nano,
                     0 if usage.priced else 1, _USAGE_TTL_MS]  # fmt: skip
        out = await self._call(self._settle, keys, args)
        return {scope: int(v) for scope, v in zip(scopes, out, strict=True)}

    async def usage(self, scopes: list[str], month: str) -> dict[str, dict[str, int]]:
        self._outage.check()
        try:
            async with self.redis.pipeline(transaction=False) as pipe:
                for scope in scopes:
                    pipe.hgetall(self._usage_key(month, scope))
                rows = await pipe.execute()
        except Exception as exc:
            raise self._outage.failed(exc) from exc
        out = {}
        for scope, row in zip(scopes, rows, strict=True):
            values = {k.decode() if isinstance(k, bytes) else k: int(v) for k, v in row.items()}
            out[scope] = {f: values.get(f, 0) for f in USAGE_FIELDS}
        return out

    async def aclose(self) -> None:
        return None  # the connection pool belongs to the Gateway
