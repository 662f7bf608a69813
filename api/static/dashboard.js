// The live dashboard: follows one board's Server-Sent Events stream
// (GET /v1/leaderboards/{board}/stream) and redraws the part each event names.
//
// The stream is read with fetch() rather than EventSource so that, on a server that asks for
// credentials, the read key travels in the X-API-Key header and never in a URL. The board is
// chosen with the selector, or in the address: #board=<id>&rows=<n> (a screen can open one
// board, with as many rows as it has room for; 10 by default).
"use strict";

const RECONNECT_MS = 1000;
const UPGRADES = 12;
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.hash.slice(1));
const ROWS = Math.min(100, Math.max(1, parseInt(params.get("rows"), 10) || 10));

let apiKey = sessionStorage.getItem("scoring-read-key") || "";
let following = null; // the AbortController of the stream being read
let lastPoints = new Map(); // user id -> points shown, to flash the rows that changed
let tierOrder = [];

function headers() {
  return apiKey ? { "X-API-Key": apiKey } : {};
}

function setStatus(text, kind) {
  const el = $("status");
  el.textContent = text;
  el.className = `status ${kind}`;
}

function tierColor(tier) {
  const i = Math.max(0, tierOrder.indexOf(tier));
  return `var(--tier-${Math.min(i, 4)})`;
}

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function renderBoard(data) {
  $("users").textContent = `${data.total_users.toLocaleString()} on this board`;
  $("empty").hidden = data.rows.length > 0;
  const body = document.createElement("tbody");
  const seen = new Map();
  for (const row of data.rows) {
    const tr = document.createElement("tr");
    tr.dataset.user = row.user_id;
    tr.append(cell(row.rank, "rank"));
    const name = cell(row.name, "name");
    if (row.name !== row.user_id) {
      const uid = document.createElement("span");
      uid.className = "uid";
      uid.textContent = row.user_id;
      name.append(uid);
    }
    tr.append(name);
    const tier = document.createElement("td");
    const badge = document.createElement("span");
    badge.className = "badge tier";
    badge.textContent = row.tier_display;
    badge.style.setProperty("--tier-color", tierColor(row.tier));
    tier.append(badge);
    tr.append(tier);
    tr.append(cell(row.level, "num level"));
    tr.append(cell(row.points.toLocaleString(), "num points"));
    const streak = cell(row.streak || "–", "num streak");
    if (row.streak) {
      const unit = document.createElement("small");
      unit.textContent = row.streak === 1 ? "day" : "days";
      streak.append(unit);
    }
    tr.append(streak);
    const before = lastPoints.get(row.user_id);
    if (before !== undefined && before !== row.points) tr.classList.add("changed");
    seen.set(row.user_id, row.points);
    body.append(tr);
  }
  lastPoints = seen;
  $("leaderboard").tBodies[0].replaceWith(body);
}

function renderTiers(data) {
  tierOrder = data.tiers.map((t) => t.tier);
  const total = data.tiers.reduce((n, t) => n + t.users, 0);
  const list = $("tiers");
  list.replaceChildren(
    ...data.tiers.map((t) => {
      const li = document.createElement("li");
      li.dataset.tier = t.tier;
      const label = document.createElement("span");
      label.textContent = t.display;
      const bar = document.createElement("span");
      bar.className = "bar";
      const fill = document.createElement("span");
      fill.className = "fill";
      fill.style.display = "block";
      fill.style.setProperty("--tier-color", tierColor(t.tier));
      fill.style.width = total ? `${(100 * t.users) / total}%` : "0";
      bar.append(fill);
      const count = document.createElement("span");
      count.className = "count";
      count.textContent = t.users.toLocaleString();
      li.append(label, bar, count);
      return li;
    }),
  );
}

function ago(iso) {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  if (s < 86400) return `${Math.floor(s / 3600)}h ago`;
  return new Date(iso).toLocaleDateString();
}

function renderUpgrades(data) {
  $("upgrades").replaceChildren(
    ...data.upgrades.map((u) => {
      const li = document.createElement("li");
      const what = document.createElement("span");
      const tierUp = u.tier !== u.from_tier;
      if (u.achievement) {
        li.className = "achievement";
        what.textContent = `${u.name} earned ${u.achievement}` + (u.level > 1 ? ` (level ${u.level})` : "");
      } else {
        li.className = tierUp ? "tier" : "level";
        what.textContent = tierUp
          ? `${u.name} reached ${u.tier_display}`
          : `${u.name} reached level ${u.level}`;
      }
      const when = document.createElement("time");
      when.dateTime = u.at;
      when.textContent = ago(u.at);
      li.append(what, when);
      return li;
    }),
  );
}

function refreshTimes() {
  for (const t of document.querySelectorAll("#upgrades time")) t.textContent = ago(t.dateTime);
}

const handlers = {
  board: renderBoard,
  tiers: renderTiers,
  upgrades: renderUpgrades,
  error: () => setStatus("store unavailable", "error"),
};

function dispatch(block) {
  let name = "message";
  const data = [];
  for (const line of block.split("\n")) {
    if (line.startsWith("event:")) name = line.slice(6).trim();
    else if (line.startsWith("data:")) data.push(line.slice(5).trimStart());
  }
  if (!data.length || !handlers[name]) return;
  if (name !== "error") setStatus("live", "live");
  handlers[name](JSON.parse(data.join("\n")));
}

function needKey(message) {
  setStatus("credentials needed", "error");
  $("keyerror").textContent = message || "";
  $("keyform").hidden = false;
}

async function follow(board) {
  if (following) following.abort();
  const ctrl = new AbortController();
  following = ctrl;
  lastPoints = new Map();
  setStatus("connecting", "connecting");
  try {
    const url = `/v1/leaderboards/${encodeURIComponent(board)}/stream?limit=${ROWS}&upgrades=${UPGRADES}`;
    const resp = await fetch(url, { headers: headers(), signal: ctrl.signal, cache: "no-store" });
    if (resp.status === 401 || resp.status === 403) {
      const body = await resp.json().catch(() => ({}));
      needKey(body.error && body.error.message);
      return;
    }
    if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
    const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value.replace(/\r\n/g, "\n");
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        dispatch(buffer.slice(0, end));
        buffer = buffer.slice(end + 2);
      }
    }
  } catch (err) {
    if (ctrl.signal.aborted) return;
  }
  if (following !== ctrl) return;
  setStatus("reconnecting", "reconnecting");
  setTimeout(() => {
    if (following === ctrl) follow(board);
  }, RECONNECT_MS);
}

function chosenBoard(boards) {
  const wanted = params.get("board");
  return boards.some((b) => b.id === wanted) ? wanted : boards[0].id;
}

async function start() {
  const resp = await fetch("/v1/leaderboards", { headers: headers(), cache: "no-store" });
  if (resp.status === 401 || resp.status === 403) {
    const body = await resp.json().catch(() => ({}));
    needKey(body.error && body.error.message);
    return;
  }
  if (!resp.ok) {
    setStatus(`server error ${resp.status}`, "error");
    setTimeout(boot, 3000);
    return;
  }
  const { boards } = await resp.json();
  const select = $("board");
  select.replaceChildren(
    ...boards.map((b) => {
      const option = document.createElement("option");
      option.value = b.id;
      option.textContent = b.title;
      return option;
    }),
  );
  select.value = chosenBoard(boards);
  follow(select.value);
}

$("board").addEventListener("change", (e) => {
  params.set("board", e.target.value);
  history.replaceState(null, "", `#${params}`);
  follow(e.target.value);
});

$("keyform").addEventListener("submit", (e) => {
  e.preventDefault();
  apiKey = $("key").value.trim();
  sessionStorage.setItem("scoring-read-key", apiKey);
  $("keyform").hidden = true;
  boot();
});

function boot() {
  start().catch(() => {
    setStatus("server unreachable", "error");
    setTimeout(boot, 3000);
  });
}

setInterval(refreshTimes, 5000);
boot();
