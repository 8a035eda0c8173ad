"""The live status page (``/`` of the metrics endpoint): one HTML document with its CSS and
script inline (no external asset, no request but ``status.json``), which polls
``status.json`` every two seconds and draws the last minutes as SVG sparklines."""

from __future__ import annotations

__all__ = ["STATUS_PAGE"]

_HTML = r"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<link rel="icon" href="data:,">
<title>twoway status</title>
<style>
  :root { --bg:#0f1419; --card:#1a212b; --fg:#e6e6e6; --dim:#8b96a5; --accent:#4fc3f7;
          --ok:#66bb6a; --bad:#ef5350; --warn:#ffb74d; }
  * { box-sizing: border-box; }
  body { margin:0; padding:1.2rem; background:var(--bg); color:var(--fg);
         font:15px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif; }
  header { display:flex; align-items:baseline; gap:1rem; flex-wrap:wrap; margin-bottom:1rem; }
  h1 { font-size:1.3rem; margin:0; }
  .dim { color:var(--dim); }
  .grid { display:grid; grid-template-columns:repeat(auto-fill, minmax(15rem, 1fr)); gap:.8rem; }
  .card { background:var(--card); border-radius:.5rem; padding:.8rem 1rem; }
  .card h2 { font-size:.8rem; font-weight:600; text-transform:uppercase; letter-spacing:.05em;
             color:var(--dim); margin:0 0 .3rem; }
  .big { font-size:2rem; font-weight:600; font-variant-numeric:tabular-nums; }
  .wide { grid-column:1 / -1; }
  svg { width:100%; height:64px; display:block; margin-top:.3rem; }
  polyline { fill:none; stroke:var(--accent); stroke-width:2; vector-effect:non-scaling-stroke; }
  table { width:100%; border-collapse:collapse; font-variant-numeric:tabular-nums; }
  td { padding:.1rem 0; } td:last-child { text-align:right; }
  .pill { display:inline-block; padding:.05rem .5rem; border-radius:1rem; font-size:.85rem; }
  .ok { background:var(--ok); color:#000; } .bad { background:var(--bad); color:#000; }
  .warn { background:var(--warn); color:#000; }
</style>
</head>
<body>
<header>
  <h1>twoway <span id="service">…</span></h1>
  <span class="dim" id="meta">connecting…</span>
  <span class="pill warn" id="state">waiting</span>
</header>
<div class="grid">
  <div class="card"><h2>Connections</h2><div class="big" id="connections">–</div>
    <div class="dim" id="conn-detail"></div><svg id="spark-conns" viewBox="0 0 100 40"
    preserveAspectRatio="none"><polyline points=""/></svg></div>
  <div class="card"><h2 id="rate-title">Messages / s</h2><div class="big" id="rate">–</div>
    <div class="dim" id="rate-detail"></div><svg id="spark-rate" viewBox="0 0 100 40"
    preserveAspectRatio="none"><polyline points=""/></svg></div>
  <div class="card"><h2>Traffic</h2><table>
    <tr><td>received</td><td id="bytes-in">–</td></tr>
    <tr><td>sent</td><td id="bytes-out">–</td></tr>
    <tr><td>sent / s</td><td id="out-rate">–</td></tr></table></div>
  <div class="card" id="chat-card" hidden><h2>Chat</h2><table>
    <tr><td>members</td><td id="members">–</td></tr>
    <tr><td>rooms</td><td id="rooms">–</td></tr>
    <tr><td>bus</td><td id="bus">–</td></tr></table></div>
  <div class="card"><h2>Refused</h2><table id="refused"></table></div>
  <div class="card"><h2>Protections</h2><table id="protections"></table></div>
  <div class="card"><h2>Process</h2><table>
    <tr><td>memory (RSS)</td><td id="rss">–</td></tr>
    <tr><td>event loop lag</td><td id="lag">–</td></tr>
    <tr><td>workers</td><td id="workers">–</td></tr></table></div>
</div>
<script>
"use strict";
const query = window.location.search;
const $ = (id) => document.getElementById(id);
function num(n) { return n == null ? "–" : Math.round(n).toLocaleString("en"); }
function bytes(n) {
  if (n == null) return "–";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : Math.round(n)) + " " + units[i];
}
function duration(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600);
  const m = Math.floor(s % 3600 / 60);
  return d ? d + "d " + h + "h" : h ? h + "h " + m + "m" : m ? m + "m " + s % 60 + "s" : s + "s";
}
function rates(history, col) {
  const out = [];
  for (let i = 1; i < history.length; i++) {
    const dt = history[i][0] - history[i - 1][0];
    out.push(dt > 0 ? Math.max(0, history[i][col] - history[i - 1][col]) / dt : 0);
  }
  return out;
}
function spark(id, values) {
  const line = $(id).querySelector("polyline");
  if (values.length < 2) { line.setAttribute("points", ""); return; }
  const max = Math.max(1, ...values);
  const step = 100 / (values.length - 1);
  line.setAttribute("points", values.map((v, i) =>
    (i * step).toFixed(2) + "," + (38 - 36 * v / max).toFixed(2)).join(" "));
}
function rows(id, entries) {
  const table = $(id);
  table.replaceChildren();
  for (const [name, value] of entries) {
    const tr = table.insertRow();
    tr.insertCell().textContent = name;
    tr.insertCell().textContent = num(value);
  }
}
function render(s) {
  $("service").textContent = s.service;
  $("meta").textContent = "up " + duration(s.uptime) + (s.version ? " · v" + s.version : "");
  $("connections").textContent = num(s.connections);
  $("conn-detail").textContent = "peak " + num(s.peak) + " · " + num(s.accepted) + " accepted";
  const h = s.history;
  spark("spark-conns", h.map((p) => p[1]));
  const chat = s.messages != null;
  $("rate-title").textContent = chat ? "Messages / s" : "Received / s";
  const inRates = rates(h, 2), outRates = rates(h, 3);
  const last = inRates.length ? inRates[inRates.length - 1] : 0;
  $("rate").textContent = chat ? last.toFixed(1) : bytes(last);
  $("rate-detail").textContent = chat ? num(s.messages) + " received in all" : "";
  spark("spark-rate", inRates);
  $("bytes-in").textContent = bytes(s.bytes_in);
  $("bytes-out").textContent = bytes(s.bytes_out);
  $("out-rate").textContent = bytes(outRates.length ? outRates[outRates.length - 1] : 0);
  $("chat-card").hidden = !chat;
  if (chat) {
    $("members").textContent = num(s.members);
    $("rooms").textContent = num(s.rooms);
    $("bus").textContent = s.bus_up == null ? "local" : s.bus_up > 0 ? "up" : "down";
  }
  rows("refused", Object.entries(s.refused));
  rows("protections", Object.entries(s.protections)
    .filter(([k, v]) => v || !k.startsWith("flood") || chat));
  $("rss").textContent = bytes(s.rss);
  $("lag").textContent = (s.lag * 1000).toFixed(0) + " ms";
  $("workers").textContent = num(s.workers);
  const state = $("state");
  state.textContent = "live";
  state.className = "pill ok";
}
async function poll() {
  try {
    const response = await fetch("status.json" + query, { cache: "no-store" });
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
  } catch (err) {
    const state = $("state");
    state.textContent = "unreachable";
    state.className = "pill bad";
  }
  setTimeout(poll, 2000);
}
poll();
</script>
</body>
</html>
"""

#: The page's bytes, served as ``text/html``.
STATUS_PAGE = _HTML.encode()
