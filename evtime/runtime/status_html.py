"""The status page's HTML: one self-contained document (inline CSS and JS, no external
assets, no build step) that fetches ``status.json`` every 2 s and draws it
(evtime/runtime/status_page.py serves both). ``status.json`` is one worker's document, or
``{"workers": [...]}`` from the supervisor of ``evtime worker -p N``."""

from __future__ import annotations

PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>evtime status</title>
<style>
  :root { --fg: #1d2330; --muted: #667085; --line: #e4e7ec; --bg: #f6f7f9;
          --accent: #2f6fde; --warn: #c4320a; --ok: #067647; }
  * { box-sizing: border-box; }
  body { margin: 0; font: 14px/1.4 system-ui, -apple-system, "Segoe UI", sans-serif;
         color: var(--fg); background: var(--bg); }
  header { display: flex; align-items: baseline; gap: 16px; padding: 12px 20px;
           background: #1d2330; color: #fff; }
  header h1 { margin: 0; font-size: 18px; }
  header .meta { color: #c0c6d4; font-size: 13px; }
  main { padding: 16px 20px; display: grid; gap: 16px; }
  section.worker { background: #fff; border: 1px solid var(--line); border-radius: 8px;
                   padding: 14px 16px; }
  section.worker h2 { margin: 0 0 10px; font-size: 16px; display: flex; gap: 10px;
                      align-items: center; }
  .badge { font-size: 12px; padding: 1px 8px; border-radius: 10px; background: #eef2f6;
           color: var(--muted); font-weight: 500; }
  .badge.ok { background: #dcfae6; color: var(--ok); }
  .badge.warn { background: #fee4e2; color: var(--warn); }
  .tiles { display: grid; grid-template-columns: repeat(auto-fill, minmax(140px, 1fr));
           gap: 8px; margin-bottom: 12px; }
  .tile { border: 1px solid var(--line); border-radius: 6px; padding: 6px 10px; }
  .tile .label { color: var(--muted); font-size: 12px; }
  .tile .value { font-size: 18px; font-variant-numeric: tabular-nums; }
  .chart { margin-bottom: 12px; }
  .chart svg { width: 100%; height: 110px; display: block; }
  .chart .label { color: var(--muted); font-size: 12px; }
  table { border-collapse: collapse; width: 100%; margin-bottom: 12px; }
  th, td { text-align: left; padding: 4px 8px; border-bottom: 1px solid var(--line);
           font-variant-numeric: tabular-nums; white-space: nowrap; }
  th { color: var(--muted); font-weight: 500; font-size: 12px; }
  td.error { white-space: normal; font-family: ui-monospace, monospace; font-size: 12px; }
  h3 { margin: 8px 0 4px; font-size: 13px; color: var(--muted); font-weight: 600; }
  .none { color: var(--muted); font-style: italic; }
  .down { color: var(--warn); }
</style>
</head>
<body>
<header><h1>evtime</h1><span class="meta" id="meta">loading status.json ...</span></header>
<main id="workers"></main>
<script>
"use strict";
const REFRESH_MS = 2000;
const esc = (v) => String(v).replace(/[&<>"']/g,
  (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const num = (v) => v === null || v === undefined ? "-" : Number(v).toLocaleString("en");
function bytes(v) {
  if (v === null || v === undefined) return "-";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return (i ? v.toFixed(1) : v) + " " + units[i];
}
function secs(v) {
  if (v === null || v === undefined) return "-";
  if (v < 1) return Math.round(v * 1000) + " ms";
  if (v < 120) return v.toFixed(1) + " s";
  if (v < 7200) return (v / 60).toFixed(1) + " min";
  return (v / 3600).toFixed(1) + " h";
}
function rates(samples) {
  const out = [];
  for (let i = 1; i < samples.length; i++) {
    const dt = (samples[i][0] - samples[i - 1][0]) / 1000;
    if (dt > 0) out.push([samples[i][0], (samples[i][1] - samples[i - 1][1]) / dt]);
  }
  return out;
}
function chart(samples) {
  const r = rates(samples || []);
  const w = 600, h = 100;
  if (r.length < 2) {
    return '<svg viewBox="0 0 600 100" preserveAspectRatio="none"><text x="8" y="55" ' +
      'fill="#667085" font-size="13">collecting samples ...</text></svg>';
  }
  const t0 = r[0][0], t1 = r[r.length - 1][0];
  const top = Math.max(1, ...r.map((p) => p[1]));
  const x = (t) => t1 === t0 ? w : ((t - t0) / (t1 - t0)) * w;
  const y = (v) => h - 4 - (v / top) * (h - 22);
  const pts = r.map((p) => x(p[0]).toFixed(1) + "," + y(p[1]).toFixed(1)).join(" ");
  return '<svg viewBox="0 0 600 100" preserveAspectRatio="none">' +
    '<line x1="0" y1="' + y(top) + '" x2="600" y2="' + y(top) +
    '" stroke="#e4e7ec" stroke-dasharray="4 4"/>' +
    '<polygon points="0,' + (h - 4) + " " + pts + " " + w + "," + (h - 4) +
    '" fill="#2f6fde" fill-opacity="0.12"/>' +
    '<polyline points="' + pts + '" fill="none" stroke="#2f6fde" stroke-width="2" ' +
    'vector-effect="non-scaling-stroke"/>' +
    '<text x="4" y="12" fill="#667085" font-size="11">' + num(Math.round(top)) +
    ' rec/s</text></svg>';
}
function tile(label, value, cls) {
  return '<div class="tile"><div class="label">' + esc(label) + '</div><div class="value' +
    (cls ? " " + cls : "") + '">' + esc(value) + "</div></div>";
}
function tasksTable(tasks) {
  if (!tasks.length) return '<p class="none">no partition tasks open</p>';
  let rows = "";
  for (const t of tasks) {
    for (const p of t.inputs) {
      rows += "<tr><td>" + esc(p.topic) + "[" + p.partition + "]</td><td>" + num(p.offset) +
        "</td><td>" + num(p.lag) + "</td><td>" + esc(t.watermark || "-") + "</td><td>" +
        secs(t.watermark_delay_s) + (p.clock ? " (clock)" : "") + "</td><td>" +
        bytes(t.state_bytes) + "</td><td>" + num(t.state_keys) + "</td></tr>";
    }
  }
  return "<table><thead><tr><th>partition</th><th>next offset</th><th>lag</th>" +
    "<th>watermark</th><th>behind clock</th><th>state</th><th>keys</th></tr></thead>" +
    "<tbody>" + rows + "</tbody></table>";
}
function deadTable(w) {
  const counts = Object.entries(w.dead_letters || {});
  const summary = counts.length
    ? counts.map(([r, n]) => esc(r) + ": " + num(n)).join(", ") : "none";
  const letters = w.recent_dead_letters || [];
  if (!letters.length) return '<h3>Dead letters (' + summary + ')</h3>';
  let rows = "";
  for (const d of letters) {
    rows += "<tr><td>" + esc(d.reason) + "</td><td>" + esc(d.topic) + "[" + d.partition +
      "]@" + d.offset + "</td><td>" + esc(d.timestamp || "-") + '</td><td class="error">' +
      esc(d.error) + "</td></tr>";
  }
  return "<h3>Latest dead letters (" + summary + ")</h3><table><thead><tr><th>reason</th>" +
    "<th>position</th><th>event time</th><th>error</th></tr></thead><tbody>" + rows +
    "</tbody></table>";
}
function worker(w, label) {
  if (w.error) {
    return '<section class="worker"><h2>' + esc(label) + ' <span class="badge warn">' +
      'unreachable</span></h2><p class="down">' + esc(w.error) + "</p></section>";
  }
  const r = rates(w.samples || []);
  const rate = r.length ? r[r.length - 1][1] : null;
  const state = w.state === "running" ? "ok" : "warn";
  return '<section class="worker"><h2>' + esc(label) + ' <span class="badge ' + state +
    '">' + esc(w.state) + '</span><span class="badge ' + (w.paused ? "warn" : "ok") + '">' +
    (w.paused ? "paused (backpressure)" : "flowing") + "</span></h2>" +
    '<div class="tiles">' +
    tile("records in", num(w.records_in)) +
    tile("input rate", rate === null ? "-" : num(Math.round(rate)) + "/s") +
    tile("records out", num(w.records_out)) +
    tile("partitions", num(w.assigned.length)) +
    tile("last checkpoint", w.last_checkpoint_age_s === null ? "none"
      : secs(w.last_checkpoint_age_s) + " ago") +
    tile("checkpoint took", secs(w.checkpoint_last_seconds)) +
    tile("checkpoints", num(w.checkpoints)) +
    tile("late records", num(w.late_records)) +
    tile("backpressure pauses", num(w.pauses)) +
    "</div>" +
    '<div class="chart"><div class="label">input records per second, last minutes</div>' +
    chart(w.samples) + "</div>" +
    "<h3>Partitions: " + esc(w.assigned.join(" ") || "none assigned") + "</h3>" +
    tasksTable(w.tasks) + deadTable(w) + "</section>";
}
async function refresh() {
  try {
    const response = await fetch("status.json", {cache: "no-store"});
    const data = await response.json();
    const workers = data.workers || [data];
    const first = workers.find((w) => !w.error) || {};
    document.getElementById("meta").textContent = (first.app || "?") + " \\u00b7 " +
      workers.length + (workers.length === 1 ? " worker" : " workers") + " \\u00b7 " +
      (first.now || new Date().toISOString());
    document.getElementById("workers").innerHTML = workers.map((w) =>
      worker(w, data.workers ? "worker-" + w.worker + " (port " + w.port + ")" : "worker")
    ).join("");
  } catch (err) {
    document.getElementById("meta").textContent = "status.json unreachable: " + err;
  }
}
refresh();
setInterval(refresh, REFRESH_MS);
</script>
</body>
</html>
"""
