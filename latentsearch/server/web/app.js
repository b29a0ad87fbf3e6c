// The latentsearch web page: plain JavaScript over the HTTP API, no build step, no CDN.
"use strict";
const $ = (id) => document.getElementById(id);
let mapData = null;
let highlighted = new Set();

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

function renderHits(list, hits, withMore) {
  list.innerHTML = "";
  if (!hits.length) { list.innerHTML = '<li class="meta">no results</li>'; return; }
  const name = $("collection").value;
  for (const hit of hits) {
    const li = document.createElement("li");
    li.className = "hit";
    li.dataset.id = hit.id;
    const thumb = hit.uri && !hit.text
      ? `<img alt="" src="/api/collections/${encodeURIComponent(name)}/thumbnails/${encodeURIComponent(hit.id)}">` : "";
    li.innerHTML = `${thumb}<span class="id">${escapeHtml(hit.id)}</span><span class="score">${hit.score.toFixed(4)}</span>` +
      (withMore ? '<button class="more">more like this</button>' : "") +
      `<div class="text">${snippetHtml(hit)}</div>${whereHtml(hit)}<div class="meta">${escapeHtml(JSON.stringify(hit.metadata))}</div>`;
    if (withMore) li.querySelector("button.more").addEventListener("click", () => moreLike(hit.id));
    list.appendChild(li);
  }
}

async function loadCollections() {
  const collections = await api("/api/collections");
  const select = $("collection");
  select.innerHTML = collections.map((c) => `<option value="${escapeHtml(c.name)}">${escapeHtml(c.name)} (${c.count})</option>`).join("");
  if (collections.length) await selectCollection();
  else $("status").textContent = "no collections yet: create one with `latentsearch create`";
}

async function selectCollection() {
  showError(null);
  highlighted = new Set();
  $("results").innerHTML = "";
  $("recommendations").innerHTML = '<li class="meta">Click “more like this” on a result.</li>';
  await Promise.all([loadMap(), loadOutliers()]);
}

async function search() {
  showError(null);
  const query = $("query").value.trim();
  if (!query) return;
  const name = $("collection").value;
  $("status").textContent = "searching…";
  try {
    const hits = await api(`/api/collections/${encodeURIComponent(name)}/search`, {
      method: "POST", body: JSON.stringify({ query, k: 10, mode: $("mode").value }),
    });
    renderHits($("results"), hits, true);
    highlighted = new Set(hits.map((h) => h.id));
    drawMap();
    $("status").textContent = `${hits.length} results`;
  } catch (err) { showError(err); $("status").textContent = ""; }
}

async function moreLike(id) {
  showError(null);
  const name = $("collection").value;
  try {
    const hits = await api(`/api/collections/${encodeURIComponent(name)}/recommend`, {
      method: "POST", body: JSON.stringify({ positive: [id], k: 8 }),
    });
    $("rec-title").textContent = `More like ${id}`;
    renderHits($("recommendations"), hits, true);
    highlighted = new Set([id, ...hits.map((h) => h.id)]);
    drawMap();
  } catch (err) { showError(err); }
}

async function loadOutliers() {
  const name = $("collection").value;
  const list = $("outliers");
  try {
    const found = await api(`/api/collections/${encodeURIComponent(name)}/outliers?top=8&contamination=0.05`);
    list.innerHTML = found.length ? "" : '<li class="meta">nothing flagged</li>';
    for (const r of found) {
      const li = document.createElement("li");
      li.innerHTML = `<span class="id">${escapeHtml(r.id)}</span><span class="score">score ${r.score.toFixed(4)}, ` +
        `percentile ${r.percentile.toFixed(1)}</span><div class="text">${escapeHtml((r.text || "").slice(0, 140))}</div>`;
      list.appendChild(li);
    }
  } catch (err) { list.innerHTML = `<li class="meta">${escapeHtml(err.message)}</li>`; }
}

async function loadMap() {
  const name = $("collection").value;
  try {
    mapData = await api(`/api/collections/${encodeURIComponent(name)}/map?method=pca&sample=5000`);
    $("map-info").textContent = `PCA of ${mapData.ids.length} items, trustworthiness ${mapData.trustworthiness.toFixed(2)}`;
  } catch (err) { mapData = null; $("map-info").textContent = err.message; }
  drawMap();
}

function drawMap() {
  const canvas = $("map");
  const ctx = canvas.getContext("2d");
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (!mapData || !mapData.coords.length) return;
  const xs = mapData.coords.map((c) => c[0]), ys = mapData.coords.map((c) => c[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const pad = 20;
  const px = (x) => pad + ((x - x0) / ((x1 - x0) || 1)) * (canvas.width - 2 * pad);
  const py = (y) => canvas.height - pad - ((y - y0) / ((y1 - y0) || 1)) * (canvas.height - 2 * pad);
  mapData.ids.forEach((id, i) => {
    if (highlighted.has(id)) return;
    ctx.fillStyle = "rgba(36, 59, 83, 0.35)";
    ctx.beginPath(); ctx.arc(px(xs[i]), py(ys[i]), 4, 0, 2 * Math.PI); ctx.fill();
  });
  mapData.ids.forEach((id, i) => {  // highlighted points on top
    if (!highlighted.has(id)) return;
    ctx.fillStyle = "#e4572e";
    ctx.beginPath(); ctx.arc(px(xs[i]), py(ys[i]), 7, 0, 2 * Math.PI); ctx.fill();
  });
  canvas.dataset.highlighted = String([...highlighted].filter((id) => mapData.ids.includes(id)).length);
}

$("go").addEventListener("click", search);
$("query").addEventListener("keydown", (e) => { if (e.key === "Enter") search(); });
$("collection").addEventListener("change", selectCollection);
$("key").value = localStorage.getItem("latentsearch-key") || "";
$("key").addEventListener("change", () => { localStorage.setItem("latentsearch-key", $("key").value); loadCollections().catch(showError); });
loadCollections().catch(showError);
