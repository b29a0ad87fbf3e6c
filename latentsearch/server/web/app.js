// The latentsearch web page: plain JavaScript over the HTTP API, no build step, no CDN.
"use strict";
const $ = (id) => document.getElementById(id);
const METHODS = { pca: "PCA", tsne: "t-SNE", umap: "UMAP" };
let info = null;  // the selected collection's info: counts and derived metadata layers
let mapData = null;
let mapPoints = [];  // canvas coordinates of mapData's points, for hovering and clicking
let highlighted = new Set();
const shownLayers = new Set();  // layers whose fields the user asked to see
const rendered = {};  // list id -> [hits, withMore]: re-rendered when a layer is shown or hidden

function headers() {
  const h = { "Content-Type": "application/json" };
  const key = $("key").value || localStorage.getItem("latentsearch-key") || "";
  if (key) h["X-API-Key"] = key;
  return h;
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: headers() });
  const body = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(body.error || `HTTP ${response.status}`);
  return body;
}

const collectionPath = (suffix = "") => `/api/collections/${encodeURIComponent($("collection").value)}${suffix}`;
const sleep = (ms) => new Promise((done) => setTimeout(done, ms));

function showError(err) { $("error").textContent = err ? String(err.message || err) : ""; }

function escapeHtml(s) {
  return String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}

function snippetHtml(hit) {
  // Snippets mark matched words with **…**: escape first, then turn the markers into <mark>.
  if (hit.snippet) return escapeHtml(hit.snippet).replace(/\*\*(.+?)\*\*/g, "<mark>$1</mark>");
  const text = (hit.passage && hit.passage.text) || hit.text || hit.uri || "";
  return escapeHtml(text.length > 220 ? text.slice(0, 219) + "…" : text);
}

function whereHtml(hit) {
  // A long document: say which passage matched (and its page), so the snippet can be found in it.
  const p = hit.passage;
  if (!p || (p.start === 0 && p.end >= (hit.text || "").length && p.page == null)) return "";
  const page = p.page != null ? `, page ${p.page}` : "";
  return `<div class="meta where">passage ${p.index + 1}: characters ${p.start}–${p.end}${page}</div>`;
}

function layerOf() {
  // field -> its layer, for every derived field (the collection's manifest records them by layer)
  const of = new Map();
  for (const [layer, about] of Object.entries((info && info.layers) || {})) {
    for (const field of about.fields || []) of.set(field, layer);
  }
  return of;
}

function fieldsHtml(metadata) {
  // Metadata as key/value rows; derived layer fields only when their layer is shown.
  const layers = layerOf();
  const rows = Object.entries(metadata || {}).filter(([k]) => !layers.has(k) || shownLayers.has(layers.get(k)));
  if (!rows.length) return "";
  return '<table class="fields">' + rows.map(([k, v]) => {
    const value = typeof v === "string" ? v : JSON.stringify(v);
    return `<tr${layers.has(k) ? ' class="layer"' : ""}><th>${escapeHtml(k)}</th><td>${escapeHtml(value)}</td></tr>`;
  }).join("") + "</table>";
}

function renderHits(list, hits, withMore) {
  rendered[list.id] = [hits, withMore];
  list.innerHTML = "";
  if (!hits.length) { list.innerHTML = '<li class="meta">no results</li>'; return; }
  for (const hit of hits) {
    const li = document.createElement("li");
    li.className = "hit";
    li.dataset.id = hit.id;
    const thumb = hit.uri && !hit.text
      ? `<img alt="" src="${collectionPath(`/thumbnails/${encodeURIComponent(hit.id)}`)}">` : "";
    li.innerHTML = `${thumb}<span class="id">${escapeHtml(hit.id)}</span><span class="score">${hit.score.toFixed(4)}</span>` +
      (withMore ? '<button class="more">more like this</button>' : "") +
      `<div class="text">${snippetHtml(hit)}</div>${whereHtml(hit)}${fieldsHtml(hit.metadata)}`;
    if (withMore) li.querySelector("button.more").addEventListener("click", () => moreLike(hit.id));
    list.appendChild(li);
  }
}

function renderLayerToggles() {
  const box = $("layer-toggles");
  box.innerHTML = "";
  for (const layer of Object.keys((info && info.layers) || {})) {
    const label = document.createElement("label");
    label.innerHTML = `<input type="checkbox" data-layer="${escapeHtml(layer)}"> show ${escapeHtml(layer)}`;
    const check = label.querySelector("input");
    check.checked = shownLayers.has(layer);
    check.addEventListener("change", () => {
      if (check.checked) shownLayers.add(layer); else shownLayers.delete(layer);
      for (const [id, [hits, withMore]] of Object.entries(rendered)) renderHits($(id), hits, withMore);
    });
    box.appendChild(label);
  }
}

async function loadCollections() {
  const collections = await api("/api/collections");
  const select = $("collection");
  select.innerHTML = collections.map((c) => `<option value="${escapeHtml(c.name)}">${escapeHtml(c.name)} (${c.count})</option>`).join("");
  if (collections.length) await selectCollection();
  else $("status").textContent = "no collections yet: create one with `latentsearch create`";
}

async function loadInfo() {
  try {
    info = await api(collectionPath());
    const passages = info.passages != null ? ` · ${info.passages.toLocaleString("en")} passages` : "";
    $("counts").textContent = `${info.count.toLocaleString("en")} items${passages}`;
  } catch (err) { info = null; $("counts").textContent = ""; showError(err); }
  renderLayerToggles();
}

async function selectCollection() {
  showError(null);
  highlighted = new Set();
  for (const id of Object.keys(rendered)) delete rendered[id];
  $("results-title").textContent = "Results";
  $("results").innerHTML = '<li class="meta">Search above. “More like this” on a result shows similar items here, at the top.</li>';
  $("rec-section").hidden = true;
  await Promise.all([loadInfo(), loadMap(), loadOutliers()]);
}

async function search() {
  showError(null);
  const query = $("query").value.trim();
  if (!query) return;
  $("status").textContent = "searching…";
  try {
    const hits = await api(collectionPath("/search"), {
      method: "POST", body: JSON.stringify({ query, k: 10, mode: $("mode").value }),
    });
    $("rec-section").hidden = true;  // they were like an earlier result: the new results come first
    $("results-title").textContent = `Results for “${query}”`;
    renderHits($("results"), hits, true);
    highlighted = new Set(hits.map((h) => h.id));
    drawMap();
    $("status").textContent = `${hits.length} results`;
  } catch (err) { showError(err); $("status").textContent = ""; }
}

async function moreLike(id) {
  showError(null);
  try {
    const hits = await api(collectionPath("/recommend"), { method: "POST", body: JSON.stringify({ positive: [id], k: 8 }) });
    $("rec-title").textContent = `More like ${id}`;
    renderHits($("recommendations"), hits, true);
    // Shown above the results, and brought into view: the click may have come from far down the list.
    const section = $("rec-section");
    section.hidden = false;
    section.scrollIntoView({ block: "start" });
    highlighted = new Set([id, ...hits.map((h) => h.id)]);
    drawMap();
  } catch (err) { showError(err); }
}

async function loadOutliers() {
  const list = $("outliers");
  try {
    const found = await api(collectionPath("/outliers?top=8&contamination=0.05"));
    list.innerHTML = found.length ? "" : '<li class="meta">nothing flagged</li>';
    for (const r of found) {
      const li = document.createElement("li");
      li.innerHTML = `<span class="id">${escapeHtml(r.id)}</span><span class="score">score ${r.score.toFixed(4)}, ` +
        `percentile ${r.percentile.toFixed(1)}</span><div class="text">${escapeHtml((r.text || "").slice(0, 140))}</div>`;
      list.appendChild(li);
    }
  } catch (err) { list.innerHTML = `<li class="meta">${escapeHtml(err.message)}</li>`; }
}

async function loadMap(afterJob = false) {
  // The server's map view: the cached UMAP projection, else PCA with a note and a way to compute UMAP.
  $("map-note").hidden = true;
  try {
    mapData = await api(collectionPath("/map/view?sample=5000"));
    const method = METHODS[mapData.method] || mapData.method;
    $("map-info").textContent = `${method} of ${mapData.ids.length.toLocaleString("en")} items, ` +
      `trustworthiness ${mapData.trustworthiness.toFixed(2)}`;
    $("map").dataset.method = mapData.method;
    if (!mapData.ready) {
      const preferred = METHODS[mapData.preferred] || mapData.preferred;
      if (afterJob) {  // the job ended well, yet nothing is cached: the server could not write it
        mapNote(`${preferred} was computed but could not be cached (a read-only collection, or a full disk: ` +
          "see the server's log)", false);
      } else {
        mapNote(`${method} shown: ${preferred} keeps neighbours together far better, but takes a while to compute ` +
          "(it is cached for next time).", true);
      }
      if (mapData.job) watchMapJob(mapData.job).catch((err) => mapNote(err.message, true));  // started earlier
    }
  } catch (err) { mapData = null; $("map-info").textContent = err.message; $("map").dataset.method = ""; }
  drawMap();
}

function mapNote(text, offerButton) {
  $("map-note").hidden = false;
  $("map-note-text").textContent = text;
  $("compute-map").hidden = !offerButton;
}

async function computeMap() {
  try {
    const started = await api(collectionPath("/map/jobs"), { method: "POST", body: JSON.stringify({ method: mapData.preferred }) });
    await watchMapJob(started.job);
  } catch (err) { mapNote(`could not compute the map: ${err.message}`, true); }
}

async function watchMapJob(job) {
  // Poll the background job; the page stays usable meanwhile. A change of collection stops the watch.
  const name = $("collection").value;
  const preferred = METHODS[mapData.preferred] || mapData.preferred;
  for (;;) {
    const status = await api(`/api/jobs/${encodeURIComponent(job)}`);
    if ($("collection").value !== name) return;
    if (status.state === "done") { await loadMap(true); return; }
    if (status.state === "failed") { mapNote(`${preferred} failed: ${status.error}`, true); return; }
    mapNote(`computing the ${preferred} map${status.stage ? `: ${status.stage}` : ""}…`, false);
    await sleep(1000);
  }
}

function drawMap() {
  const canvas = $("map");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  mapPoints = [];
  if (!mapData || !mapData.coords.length) return;
  const xs = mapData.coords.map((c) => c[0]), ys = mapData.coords.map((c) => c[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const pad = 20;
  const px = (x) => pad + ((x - x0) / ((x1 - x0) || 1)) * (canvas.width - 2 * pad);
  const py = (y) => canvas.height - pad - ((y - y0) / ((y1 - y0) || 1)) * (canvas.height - 2 * pad);
  mapPoints = xs.map((x, i) => [px(x), py(ys[i])]);
  mapData.ids.forEach((id, i) => {
    if (highlighted.has(id)) return;
    ctx.fillStyle = "rgba(36, 59, 83, 0.45)";
    ctx.beginPath(); ctx.arc(mapPoints[i][0], mapPoints[i][1], 6, 0, 2 * Math.PI); ctx.fill();
  });
  mapData.ids.forEach((id, i) => {  // highlighted points on top
    if (!highlighted.has(id)) return;
    ctx.fillStyle = "#e4572e";
    ctx.beginPath(); ctx.arc(mapPoints[i][0], mapPoints[i][1], 10, 0, 2 * Math.PI); ctx.fill();
  });
  canvas.dataset.highlighted = String([...highlighted].filter((id) => mapData.ids.includes(id)).length);
}

function pointAt(event) {
  // The map point under the mouse (within a few pixels), or -1; the canvas is scaled by CSS.
  const canvas = $("map"), box = canvas.getBoundingClientRect();
  const x = (event.clientX - box.left) * (canvas.width / box.width), y = (event.clientY - box.top) * (canvas.height / box.height);
  let best = -1, bestDistance = (10 * canvas.width / box.width) ** 2;
  mapPoints.forEach(([px, py], i) => {
    const d = (px - x) ** 2 + (py - y) ** 2;
    if (d < bestDistance) { best = i; bestDistance = d; }
  });
  return best;
}

$("map").addEventListener("mousemove", (event) => {
  const i = pointAt(event), tip = $("map-tip");
  tip.hidden = i < 0;
  $("map").style.cursor = i < 0 ? "" : "pointer";
  if (i < 0) return;
  const text = mapData.texts[i] || "";
  tip.innerHTML = `<b>${escapeHtml(mapData.ids[i])}</b> ${escapeHtml(text.length > 120 ? text.slice(0, 119) + "…" : text)}`;
  tip.style.left = `${event.offsetX + 12}px`;
  tip.style.top = `${event.offsetY + 12}px`;
});
$("map").addEventListener("mouseleave", () => { $("map-tip").hidden = true; });
$("map").addEventListener("click", (event) => { const i = pointAt(event); if (i >= 0) moreLike(mapData.ids[i]); });
$("compute-map").addEventListener("click", computeMap);
$("rec-close").addEventListener("click", () => { $("rec-section").hidden = true; });
$("go").addEventListener("click", search);
$("query").addEventListener("keydown", (e) => { if (e.key === "Enter") search(); });
$("collection").addEventListener("change", selectCollection);
$("key").value = localStorage.getItem("latentsearch-key") || "";
$("key").addEventListener("change", () => { localStorage.setItem("latentsearch-key", $("key").value); loadCollections().catch(showError); });
loadCollections().catch(showError);
