// The operators' console: reads /admin/overview, /admin/decisions and /admin/config with
// the admin key kept in this tab's sessionStorage, and explains requests with
// POST /gateway/explain. Every value is written as text (textContent), never as HTML:
// key names and model names come from clients and the config.
"use strict";

const STORAGE = "llm-gateway-admin-key";
const REFRESH_MS = 2000;
const CONFIG_REFRESH_MS = 30000;
const FEED_ROWS = 50;
const SAMPLE = {
  model: "auto",
  messages: [
    {
      role: "user",
      content: "Why does my deploy fail? My key is AKIAIOSFODNN7EXAMPLE, mail me at ops@example.com",
    },
  ],
};

const $ = (id) => document.getElementById(id);
let timer = null;
let busy = false;
let configLoaded = 0;

class AuthError extends Error {}

async function api(path, options = {}) {
  const key = sessionStorage.getItem(STORAGE) || "";
  const headers = Object.assign({ authorization: "Bearer " + key }, options.headers || {});
  const response = await fetch(path, Object.assign({ cache: "no-store" }, options, { headers }));
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  const message = body && body.error ? body.error.message : "HTTP " + response.status;
  if (response.status === 401 || response.status === 403) {
    throw new AuthError(message);
  }
  return { status: response.status, body, message };
}

// ------------------------------------------------------------------ formatting

function fmt(value, digits = 0) {
  if (value === null || value === undefined || Number.isNaN(value)) return "—";
  if (typeof value !== "number") return String(value);
  return value.toLocaleString(undefined, {
    minimumFractionDigits: digits,
    maximumFractionDigits: digits,
  });
}

function pct(value) {
  return value === null || value === undefined ? "—" : fmt(value * 100, 1) + " %";
}

function usd(value) {
  return value === null || value === undefined ? "—" : "$" + fmt(value, 4);
}

function when(seconds) {
  return seconds ? new Date(seconds * 1000).toLocaleString() : "—";
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

function fillTable(table, rows, toCells, rowAttrs) {
  const tbody = $(table).querySelector("tbody");
  const fresh = document.createDocumentFragment();
  for (const row of rows) {
    const tr = document.createElement("tr");
    for (const c of toCells(row)) tr.appendChild(Array.isArray(c) ? cell(c[0], c[1]) : cell(c));
    if (rowAttrs) rowAttrs(row, tr);
    fresh.appendChild(tr);
  }
  tbody.replaceChildren(fresh);
}

function fillList(id, pairs) {
  const dl = $(id);
  const fresh = document.createDocumentFragment();
  for (const [name, value, cls] of pairs) {
    const dt = document.createElement("dt");
    dt.textContent = name;
    const dd = document.createElement("dd");
    dd.textContent = value;
    if (cls) dd.className = cls;
    fresh.append(dt, dd);
  }
  dl.replaceChildren(fresh);
}

// ------------------------------------------------------------------ rendering

function renderOverview(o) {
  const status = $("status");
  status.textContent = o.status;
  status.className = "pill " + o.status;
  $("updated").textContent =
    "updated " + new Date(o.at * 1000).toLocaleTimeString() +
    " · pid " + o.pid + (o.workers > 1 ? " of " + o.workers + " workers" : "");
  $("window").textContent = o.window_seconds ? fmt(o.window_seconds) + " s" : "— (next refresh)";

  fillTable("providers", o.providers, (p) => [
    p.name,
    p.type + (p.local ? " (local)" : ""),
    [p.ready === null || p.ready === undefined ? "—" : p.ready ? "yes" : "no: " + (p.probe_error || ""),
      p.ready ? "ok" : "bad wrap"],
    [p.breaker, p.breaker === "open" ? "bad" : p.breaker === "half_open" ? "warn" : ""],
    [fmt(p.requests_per_second, 2), "num"],
    [fmt(p.requests), "num"],
    [fmt(p.errors), "num"],
    [pct(p.error_rate), "num" + (p.error_rate > 0.05 ? " bad" : "")],
    [fmt(p.latency_ms && p.latency_ms.p50, 1), "num"],
    [fmt(p.latency_ms && p.latency_ms.p95, 1), "num"],
    [fmt(p.latency_ms && p.latency_ms.p99, 1), "num"],
    [fmt(p.ttfb_ms && p.ttfb_ms.p95, 1), "num"],
  ], (p, tr) => {
    tr.dataset.provider = p.name;
  });

  fillTable("routes", o.routes, (r) => [
    r.rule, r.provider, [fmt(r.requests_per_second, 2), "num"], [fmt(r.requests), "num"],
  ]);

  const c = o.cache;
  fillList("cache", [
    ["enabled", o.cache_enabled ? "yes" : "no"],
    ["hit rate", pct(c.hit_rate)],
    ["hits exact / semantic", fmt(c.lookups.hit_exact) + " / " + fmt(c.lookups.hit_semantic)],
    ["misses / bypassed", fmt(c.lookups.miss) + " / " + fmt(c.lookups.bypass)],
    ["tokens saved", fmt(c.saved_tokens.prompt + c.saved_tokens.completion)],
    ["USD saved", usd(c.saved_usd)],
  ]);
  fillList("rejections", Object.entries(o.rejections).map(([reason, n]) => [
    reason.replaceAll("_", " "), fmt(n), n > 0 ? "warn" : "",
  ]));
  const now = [["in flight", fmt(o.in_flight)]];
  if (o.redis) now.push(["redis", o.redis.ok ? "ok" : "unreachable", o.redis.ok ? "ok" : "bad"]);
  now.push(["started", when(o.reload.started_at)]);
  fillList("now", now);

  const usage = o.usage;
  if (usage.error) {
    $("usage-error").textContent = usage.error.message;
    $("usage-error").hidden = false;
  } else {
    $("usage-error").hidden = true;
    $("month").textContent = usage.month;
    const budgetClass = (row) =>
      row.monthly_budget_usd && row.spend_usd >= row.monthly_budget_usd ? "num bad"
        : row.monthly_budget_usd && row.spend_usd >= 0.8 * row.monthly_budget_usd ? "num warn"
        : "num";
    fillTable("keys", usage.keys, (k) => [
      k.name, k.team || "—", k.tier, [fmt(k.requests), "num"], [fmt(k.total_tokens), "num"],
      [usd(k.spend_usd), "num"], [usd(k.monthly_budget_usd), "num"],
      [usd(k.budget_left_usd), budgetClass(k)],
    ]);
    $("teams").hidden = usage.teams.length === 0;
    fillTable("teams", usage.teams, (t) => [
      t.name, [fmt(t.requests), "num"], [fmt(t.total_tokens), "num"], [usd(t.spend_usd), "num"],
      [usd(t.monthly_budget_usd), "num"], [usd(t.budget_left_usd), budgetClass(t)],
    ]);
  }
  renderReload(o.reload);
}

function renderReload(r) {
  $("reload").textContent = r.at
    ? "Last reload " + when(r.at) + " (" + r.trigger + "): " +
      (r.ok ? "applied" : "refused, the running config stays: " + r.errors.join("; "))
    : "No reload since the start at " + when(r.started_at) + ".";
  $("reload").className = r.at && !r.ok ? "error" : "";
}

function renderFeed(feed) {
  $("feed-count").textContent = fmt(feed.recorded);
  fillTable(
    "feed",
    feed.data,
    (d) => [
      new Date(d.time * 1000).toLocaleTimeString(),
      d.key,
      d.rule || "—",
      d.provider ? d.provider + " / " + d.model : "—",
      [fmt(d.complexity, 2), "num"],
      d.privacy.length ? d.privacy.join(", ") + (d.privacy_action ? " → " + d.privacy_action : "") : "none",
      d.cache || "—",
      [String(d.status) + (d.error ? " " + d.error : ""), d.status >= 500 ? "bad" : d.status >= 400 ? "warn" : ""],
      [fmt(d.latency_ms, 1), "num"],
    ],
    (d, tr) => {
      tr.dataset.requestId = d.request_id;
    },
  );
}

function renderExplain(status, body) {
  $("explain-result").hidden = false;
  const decisionEl = $("explain-decision");
  const errorEl = $("explain-error");
  errorEl.hidden = true;
  const decision = body && body.decision;
  if (!decision) {
    decisionEl.textContent = "Not explained";
    decisionEl.className = "decision";
    errorEl.textContent = body && body.error ? body.error.message : "HTTP " + status;
    errorEl.hidden = false;
    fillTable("explain-factors", [], () => []);
    fillTable("explain-findings", [], () => []);
    $("explain-score").textContent = "";
    return;
  }
  if (decision.refused) {
    decisionEl.textContent = "Refused (HTTP " + decision.status + ")" +
      (decision.rule ? " by rule " + decision.rule : "");
    decisionEl.className = "decision";
    errorEl.textContent = body.error.message;
    errorEl.hidden = false;
  } else {
    const where = decision.provider + " / " + decision.model + ", rule " + decision.rule;
    decisionEl.textContent = decision.keep_local
      ? "Kept local: " + where + (decision.reason ? " (" + decision.reason + ")" : "")
      : "Routed to " + where +
        (decision.redacted_values ? " with " + decision.redacted_values + " values redacted" : "");
    decisionEl.className = "decision" + (decision.keep_local ? " local" : "");
  }
  const cx = body.complexity;
  $("explain-score").textContent = cx
    ? "score " + fmt(cx.score, 3) + " against threshold " + fmt(cx.threshold, 2)
    : "not scored (only model auto is)";
  fillTable("explain-factors", cx ? Object.entries(cx.factors) : [], ([name, value]) => [
    name, [fmt(value, 3), "num"],
  ]);
  const findings = (body.privacy && body.privacy.findings) || [];
  fillTable("explain-findings", findings, (f) => [
    f.detector, f.category, f.path, f.start + "–" + f.end,
  ]);
}

// ------------------------------------------------------------------ flow

function showError(message) {
  const banner = $("error-banner");
  banner.textContent = message || "";
  banner.hidden = !message;
}

async function refresh() {
  if (busy) return;
  busy = true;
  try {
    const [overview, feed] = await Promise.all([
      api("/admin/overview"),
      api("/admin/decisions?limit=" + FEED_ROWS),
    ]);
    if (overview.status !== 200) throw new Error(overview.message);
    if (feed.status !== 200) throw new Error(feed.message);
    renderOverview(overview.body);
    renderFeed(feed.body);
    if (Date.now() - configLoaded > CONFIG_REFRESH_MS) {
      const config = await api("/admin/config");
      if (config.status === 200) {
        $("config").textContent = JSON.stringify(config.body.config, null, 2);
        configLoaded = Date.now();
      }
    }
    showError("");
    return true;
  } catch (err) {
    if (err instanceof AuthError) {
      signOut(err.message);
      return false;
    }
    showError("Refresh failed: " + err.message);
    return true;
  } finally {
    busy = false;
  }
}

function signOut(message) {
  sessionStorage.removeItem(STORAGE);
  if (timer) clearInterval(timer);
  timer = null;
  configLoaded = 0;
  $("dashboard").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message || "";
  $("status").textContent = "";
  $("updated").textContent = "";
}

async function start() {
  $("login-error").textContent = "";
  if (!(await refresh())) return;
  $("login").hidden = true;
  $("dashboard").hidden = false;
  $("logout").hidden = false;
  if (!timer) timer = setInterval(refresh, REFRESH_MS);
}

async function explainNow() {
  const params = new URLSearchParams({ endpoint: $("explain-endpoint").value });
  const key = $("explain-key").value.trim();
  if (key) params.set("key", key);
  try {
    const result = await api("/gateway/explain?" + params, {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: $("explain-input").value,
    });
    renderExplain(result.status, result.body);
  } catch (err) {
    if (err instanceof AuthError) signOut(err.message);
    else renderExplain(0, { error: { message: err.message } });
  }
}

document.addEventListener("DOMContentLoaded", () => {
  $("explain-input").value = JSON.stringify(SAMPLE, null, 2);
  $("login-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("admin-key");
    sessionStorage.setItem(STORAGE, input.value.trim());
    input.value = "";
    start();
  });
  $("logout").addEventListener("click", () => signOut(""));
  $("explain-button").addEventListener("click", explainNow);
  if (sessionStorage.getItem(STORAGE)) start();
});
