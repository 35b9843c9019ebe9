// ComputeGrid dashboard: reads /api/v1 and follows /api/v1/events (server-sent events).
// No framework and nothing fetched from elsewhere: the page works on an isolated network.
"use strict";
const $ = (sel) => document.querySelector(sel);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const fmt = (v, digits = 2) => (v === null || v === undefined ? "–" : Number(v).toFixed(digits));
const ago = (ms) => { if (!ms) return "–"; const s = Math.max(0, (Date.now() - ms) / 1000); return s < 90 ? `${Math.round(s)} s ago` : `${Math.round(s / 60)} min ago`; };
let overview = null;
let selectedJob = null;
let refreshing = false;
let pendingRefresh = false;

// The API token (http_read: token), kept for this tab only; sent as a bearer header, and to
// the event stream as access_token (an EventSource cannot set headers).
const TOKEN_KEY = "computegrid-token";
let token = sessionStorage.getItem(TOKEN_KEY) || "";

class NeedsToken extends Error {}

async function getJSON(path) {
  const r = await fetch(path, { cache: "no-store", headers: token ? { Authorization: `Bearer ${token}` } : {} });
  const body = await r.json();
  if (r.status === 401) throw new NeedsToken(body?.error?.message || "this API needs a token");
  if (!r.ok) throw new Error(body?.error?.message || r.statusText);
  return body;
}

function askForToken(message) {
  const form = $("#login");
  form.hidden = false;
  $("#ready").textContent = token ? "the token was refused" : message;
  $("#ready").className = "pill bad";
  $("#live").hidden = true;
  form.onsubmit = (e) => {
    e.preventDefault();
    sessionStorage.setItem(TOKEN_KEY, $("#token").value.trim());
    location.reload();
  };
}

function renderOverview(o) {
  overview = o;
  document.body.dataset.role = o.role;
  $("#who").textContent = `${o.role} · ${o.id}`;
  const ready = $("#ready");
  ready.textContent = o.ready ? "ready" : `not ready: ${o.not_ready}`;
  ready.className = "pill " + (o.ready ? "ok" : "bad");
  $("#updated").textContent = "updated " + new Date(o.observed_at).toLocaleTimeString();
  const jobs = o.jobs;
  const tiles = [
    ["Nodes ready", o.nodes.ready], ["Nodes lost", o.nodes.lost], ["Cordoned", o.cordoned_nodes],
    ["Devices", o.devices.reduce((a, d) => a + d.total, 0)], ["Free healthy", o.devices.reduce((a, d) => a + d.free, 0)],
    ["Queue", o.queue_depth], ["Running", jobs.running + jobs.assigned], ["Succeeded", jobs.succeeded], ["Failed", jobs.failed + jobs.lost],
  ];
  $("#tiles").innerHTML = tiles.map(([k, v]) => `<div class="tile"><b>${esc(v)}</b><span>${esc(k)}</span></div>`).join("");
  $("#regions-section").hidden = o.role !== "national";
  $("#regions tbody").innerHTML = o.regions.map((r) => `<tr data-region="${esc(r.id)}" data-state="${esc(r.state)}">
      <td>${esc(r.id)}</td><td class="state-${esc(r.state)}">${esc(r.state)}</td>
      <td class="num">${r.nodes_ready} / ${r.nodes_lost}</td><td class="num">${r.devices_free} / ${r.devices_healthy} / ${r.devices_total}</td>
      <td class="num">${r.queued_jobs}</td><td class="num">${r.running_jobs}</td><td class="num">${r.expected_wait_seconds}</td>
      <td class="num">${fmt(r.price_per_kwh, 3)}</td><td class="num">${fmt(r.carbon_g_per_kwh, 0)}</td><td class="num">${fmt(r.pue, 2)}</td>
      <td>${esc((r.jurisdictions || []).join(", "))}</td>
      <td>${r.seconds_since_summary === undefined || r.seconds_since_summary === null ? "never" : Math.round(r.seconds_since_summary) + " s ago"}</td></tr>`).join("");
  const groups = {};
  for (const d of o.devices) {
    const k = `${d.vendor}|${d.grade}`;
    const g = (groups[k] ||= { vendor: d.vendor, grade: d.grade || "–", healthy: 0, degraded: 0, unhealthy: 0, free: 0 });
    g[d.health] = (g[d.health] || 0) + d.total;
    g.free += d.free;
  }
  $("#capacity tbody").innerHTML = Object.values(groups).map((g) => `<tr data-vendor="${esc(g.vendor)}" data-grade="${esc(g.grade)}">
      <td>${esc(g.vendor)}</td><td>${esc(g.grade)}</td><td class="num state-healthy">${g.healthy}</td>
      <td class="num">${g.degraded}</td><td class="num">${g.unhealthy}</td><td class="num">${g.free}</td></tr>`).join("")
    || `<tr><td colspan="6">no devices reported yet</td></tr>`;
}

async function renderHierarchy(o) {
  const regionIDs = o.role === "national" ? o.regions.filter((r) => r.state !== "never").map((r) => r.id) : [o.id];
  const open = new Set([...document.querySelectorAll("#hierarchy details[data-region]:not([data-node-key])[open]")].map((d) => d.dataset.region));
  const openNodes = new Set([...document.querySelectorAll("#hierarchy details[data-node-key][open]")].map((d) => d.dataset.nodeKey));
  const parts = [];
  for (const id of regionIDs) {
    let nodes = [], note = "";
    try {
      const q = o.role === "national" ? `?region=${encodeURIComponent(id)}&limit=500` : "?limit=500";
      const page = await getJSON(`/api/v1/nodes${q}`);
      nodes = page.nodes;
      if (page.total > nodes.length) note = ` (first ${nodes.length} of ${page.total})`;
    } catch (e) { note = ` (${e.message})`; }
    const items = nodes.map((n) => {
      const cordon = n.cordoned ? ` · cordoned${n.cordon_drain ? " (drain)" : ""}: ${esc(n.cordon_reason)}` : "";
      const health = Object.entries(n.health_counts || {}).map(([h, c]) => `<span class="state-${esc(h)}">${c} ${esc(h)}</span>`).join(", ")
        || `<span class="state-${esc(n.worst_health)}">${esc(n.worst_health)}</span>`;
      const key = `${id}/${n.node_id}`;
      return `<li data-node="${esc(n.node_id)}"><details data-node-key="${esc(key)}" data-region="${esc(id)}" data-node-id="${esc(n.node_id)}" ${openNodes.has(key) ? "open" : ""}>
        <summary><b>${esc(n.node_id)}</b> <span class="state-${esc(n.state)}">${esc(n.state)}</span>
        · ${n.free_devices || 0} of ${n.device_count || 0} free · ${health}
        · ${esc((n.models || []).join(", "))}${cordon}</summary><div class="units">${unitCache.get(key) || ""}</div></details></li>`;
    }).join("");
    parts.push(`<details data-region="${esc(id)}" ${open.has(id) || regionIDs.length === 1 ? "open" : ""}>
      <summary><b>${esc(id)}</b> · ${nodes.length} node(s)${esc(note)}</summary><ul>${items}</ul></details>`);
  }
  $("#hierarchy").innerHTML = parts.join("") || "<p>no regions yet</p>";
  for (const d of document.querySelectorAll("#hierarchy details[data-node-key]")) {
    d.addEventListener("toggle", () => { if (d.open) loadUnits(d); });
    if (d.open) loadUnits(d);
  }
}

// A node's devices (or slices), fetched when its line is opened: grade, health, the job on it.
const unitCache = new Map();
async function loadUnits(d) {
  const q = overview && overview.role === "national" ? `?region=${encodeURIComponent(d.dataset.region)}` : "";
  try {
    const n = await getJSON(`/api/v1/nodes/${encodeURIComponent(d.dataset.nodeId)}${q}`);
    const rows = (n.units || []).map((u) => `<tr data-unit="${esc(u.device_id)}" data-busy="${u.busy ? "yes" : "no"}">
      <td>${esc(u.device_id)}</td><td>${esc(u.model)}${u.partition ? " [" + esc(u.partition) + "]" : ""}</td>
      <td class="num">${((u.memory_mib || 0) / 1024).toFixed(1)} GiB</td><td>${esc(u.grade || "–")}</td>
      <td class="state-${esc(u.health)}">${esc(u.health)}</td><td>${u.busy ? "busy" : "free"}</td><td>${esc(u.job_id || "")}</td></tr>`).join("");
    const html = `<table class="units"><thead><tr><th>Device</th><th>Model</th><th>Memory</th><th>Grade</th><th>Health</th><th>Use</th><th>Job</th></tr></thead><tbody>${rows}</tbody></table>`;
    unitCache.set(d.dataset.nodeKey, html);
    d.querySelector(".units").innerHTML = html;
  } catch (e) {
    d.querySelector(".units").textContent = e.message;
  }
}

async function renderJobs() {
  const first = await getJSON("/api/v1/jobs?limit=1");
  const offset = Math.max(0, first.total - 100);
  const page = await getJSON(`/api/v1/jobs?offset=${offset}&limit=100`);
  const jobs = page.jobs.slice().reverse();
  $("#jobs tbody").innerHTML = jobs.map((j) => `<tr class="job" data-job="${esc(j.job_id)}" data-state="${esc(j.state)}">
      <td>${esc(j.job_id)}</td><td class="state-${esc(j.state)}">${esc(j.state)}</td><td>${esc(j.region_id)}</td><td>${esc(j.node_id)}</td>
      <td>${esc((j.device_models || []).join(", "))}</td><td>${esc(j.precision)}</td><td>${ago(j.updated_unix_ms)}</td>
      <td class="why">${esc(j.hold_reason ? "held: " + j.hold_reason : j.message)}</td></tr>`).join("")
    || `<tr><td colspan="8">no jobs yet</td></tr>`;
  for (const row of document.querySelectorAll("#jobs tr.job")) row.onclick = () => showJob(row.dataset.job);
  if (selectedJob) showJob(selectedJob);
}

// A feasible candidate's terms (proto JSON leaves zeros out: they are 0); a refused one has none.
function termCells(c) {
  const v = (x, digits = 2) => (c.reason ? "–" : fmt(x ?? 0, digits));
  return [v(c.energy), v(c.carbon), v(c.transfer), v(c.wait), v(c.total), v(c.kwh, 3), v(c.operational_g, 0), v(c.embodied_g, 0), v(c.rtt_ms, 0)]
    .map((t) => `<td class="num">${t}</td>`).join("");
}

async function showJob(id) {
  selectedJob = id;
  const box = $("#job-detail");
  let j;
  try { j = await getJSON(`/api/v1/jobs/${encodeURIComponent(id)}`); } catch (e) { box.hidden = false; box.textContent = e.message; return; }
  const r = j.route;
  const candidates = r ? (r.candidates || []).map((c) => `<tr data-candidate="${esc(c.region_id)}"><td>${esc(c.region_id)}${c.region_id === r.region_id ? " ✔" : ""}</td>
      <td>${c.reason ? esc(c.reason) : "feasible"}</td>${termCells(c)}</tr>`).join("") : "";
  const attempts = (j.attempts || []).map((a) => `<tr><td>${a.number}</td><td>${esc(a.node_id)}</td><td>${a.epoch || 0}</td>
      <td>${a.started_unix_ms ? new Date(a.started_unix_ms).toLocaleTimeString() : "–"}</td>
      <td>${a.ended_unix_ms ? new Date(a.ended_unix_ms).toLocaleTimeString() : "–"}</td><td>${esc(a.end_reason || "")}</td><td>${esc(a.message)}</td></tr>`).join("");
  box.hidden = false;
  box.dataset.job = id;
  box.innerHTML = `<h3>${esc(j.job_id)} <span class="state-${esc(j.state)}">${esc(j.state)}</span></h3>
    <p>${esc(j.message)}</p>
    ${r ? `<h4>Decision (${esc(r.objective)}, ${esc(r.currency)})${r.note ? ": " + esc(r.note) : ""}</h4>
      <table><thead><tr><th>Region</th><th>Verdict</th><th>Energy</th><th>Carbon</th><th>Transfer</th><th>Wait</th><th>Total</th><th>kWh</th><th>Operational g</th><th>Embodied g</th><th>RTT ms</th></tr></thead><tbody>${candidates}</tbody></table>` : ""}
    <h4>Attempts</h4><table><thead><tr><th>#</th><th>Node</th><th>Epoch</th><th>Started</th><th>Ended</th><th>Why</th><th>Message</th></tr></thead><tbody>${attempts || `<tr><td colspan="7">none yet</td></tr>`}</tbody></table>
    ${j.output_tail ? `<h4>Output (tail)</h4><pre>${esc(j.output_tail)}</pre>` : ""}`;
}

async function refresh(o) {
  if (refreshing) { pendingRefresh = true; return; }
  refreshing = true;
  try {
    renderOverview(o);
    await Promise.all([renderJobs(), renderHierarchy(o)]);
    document.body.dataset.refreshed = String((Number(document.body.dataset.refreshed) || 0) + 1);
  } catch (e) {
    console.error(e);
  } finally {
    refreshing = false;
    if (pendingRefresh) { pendingRefresh = false; refresh(overview); }
  }
}

function follow() {
  const live = $("#live");
  const source = new EventSource(token ? `/api/v1/events?access_token=${encodeURIComponent(token)}` : "/api/v1/events");
  source.addEventListener("overview", (e) => { live.textContent = "live"; live.className = "pill ok"; refresh(JSON.parse(e.data)); });
  source.onerror = () => { live.textContent = "reconnecting"; live.className = "pill bad"; };
}

getJSON("/api/v1/overview").then((o) => { refresh(o); follow(); }).catch((e) => {
  if (e instanceof NeedsToken) { askForToken(e.message); return; }
  $("#ready").textContent = e.message;
  follow();
});
