// FrameRS web page: upload, the tenant's videos, side-by-side playback, kept frames, per-frame PSNR.
// Talks to the same gateway (relative URLs) with the API key from the header field; no other host.
"use strict";

const $ = (id) => document.getElementById(id);
// Rows per step of the list (?page_size=N in the page's URL sets it; the API gives at most 100 a page).
const PAGE_SIZE = Math.max(1, parseInt(new URLSearchParams(location.search).get("page_size"), 10) || 50);
const state = { selected: null, job: null, quality: null, urls: [], poll: null, recPoll: null, shown: PAGE_SIZE };

const keyInput = $("api-key");
keyInput.value = localStorage.getItem("framers-api-key") || "";
keyInput.addEventListener("change", () => { localStorage.setItem("framers-api-key", keyInput.value); refreshList(); });

function headers() {
  const key = keyInput.value.trim();
  return key ? { "X-API-Key": key } : {};
}

async function api(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...headers(), ...(options.headers || {}) } });
  if (!response.ok && response.status !== 202) {
    let detail = response.statusText;
    try { detail = (await response.json()).detail || detail; } catch (e) { /* not JSON */ }
    throw new Error(`${response.status}: ${detail}`);
  }
  return response;
}

function fmtBytes(n) {
  if (n == null) return "–";
  const units = ["B", "kB", "MB", "GB"];
  let i = 0;
  while (n >= 1000 && i < units.length - 1) { n /= 1000; i++; }
  return `${n.toFixed(n < 10 && i ? 1 : 0)} ${units[i]}`;
}

function setText(id, text) { $(id).textContent = text; }

// --- upload with progress ------------------------------------------------------------------
$("upload-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const file = $("file").files[0];
  if (!file) return;
  const form = new FormData();
  form.append("file", file);
  if ($("target-psnr").value) form.append("target_psnr", $("target-psnr").value);
  form.append("keep_source", $("keep-source").checked ? "true" : "false");
  const xhr = new XMLHttpRequest();
  xhr.open("POST", "/compress");
  for (const [k, v] of Object.entries(headers())) xhr.setRequestHeader(k, v);
  xhr.upload.onprogress = (e) => {
    if (e.lengthComputable) $("upload-progress").style.width = `${(100 * e.loaded / e.total).toFixed(1)}%`;
  };
  xhr.onload = () => {
    let body = {};
    try { body = JSON.parse(xhr.responseText); } catch (e) { /* not JSON */ }
    if (xhr.status === 202) {
      setText("upload-status", `uploaded: ${file.name} (id ${body.id}), compression queued`);
      $("upload-progress").style.width = "100%";
      refreshList().then(() => select(body.id));
    } else {
      setText("upload-status", `upload refused (${xhr.status}): ${body.detail || xhr.statusText}`);
    }
  };
  xhr.onerror = () => setText("upload-status", "upload failed: the service did not answer");
  $("upload-progress").style.width = "0%";
  setText("upload-status", `uploading ${file.name} …`);
  xhr.send(form);
});

// --- the tenant's videos -------------------------------------------------------------------
// The newest `state.shown` videos, following the API's cursors; "Show older videos" adds a step.
async function refreshList() {
  try {
    const videos = [];
    let cursor = null;
    do {
      const limit = Math.min(100, state.shown - videos.length);
      const query = `/videos?limit=${limit}` + (cursor ? `&cursor=${encodeURIComponent(cursor)}` : "");
      const page = await (await api(query)).json();
      videos.push(...page.videos);
      cursor = page.next_cursor;
    } while (cursor && videos.length < state.shown);
    setText("conn", "");
    document.querySelector("#videos tbody").replaceChildren(...videos.slice(0, state.shown).map(row));
    $("more-videos").hidden = !cursor;
  } catch (e) {
    setText("conn", `cannot list videos: ${e.message}`);
  }
}
$("more-videos").addEventListener("click", () => { state.shown += PAGE_SIZE; refreshList(); });

function row(video) {
  const tr = document.createElement("tr");
  tr.dataset.id = video.id;
  if (video.id === state.selected) tr.classList.add("selected");
  const cells = [video.filename, video.status, null,
    video.sizes.bundle_bytes ? `${fmtBytes(video.sizes.bundle_bytes)} / ${fmtBytes(video.sizes.source_bytes)}`
      : fmtBytes(video.sizes.source_bytes),
    new Date(video.created_at).toLocaleString()];
  cells.forEach((text, i) => {
    const td = document.createElement("td");
    if (i === 2) {
      const bar = document.createElement("div"); bar.className = "bar";
      const fill = document.createElement("div"); fill.className = "fill";
      fill.style.width = `${Math.round(100 * video.progress)}%`;
      bar.append(fill); td.append(bar);
    } else {
      td.textContent = text;
    }
    if (i === 1) td.className = `status-${video.status}`;
    tr.append(td);
  });
  const action = document.createElement("td");
  if (video.status === "queued" || video.status === "running") {
    const cancel = document.createElement("button");
    cancel.textContent = "Cancel";
    cancel.className = "cancel";
    cancel.addEventListener("click", async (e) => {
      e.stopPropagation();
      try { await api(`/jobs/${video.id}/cancel`, { method: "POST" }); } catch (err) { alert(err.message); }
      refreshList();
    });
    action.append(cancel);
  }
  tr.append(action);
  tr.addEventListener("click", () => select(video.id));
  return tr;
}

// --- one video ----------------------------------------------------------------------------
async function select(id) {
  state.selected = id;
  document.querySelectorAll("#videos tbody tr").forEach((tr) => tr.classList.toggle("selected", tr.dataset.id === id));
  $("detail").hidden = false;
  clearPlayers();
  await showJob();
}

async function showJob() {
  if (!state.selected) return;
  const job = await (await api(`/jobs/${state.selected}`)).json();
  state.job = job;
  setText("detail-title", job.source.filename);
  const eta = job.eta_s != null ? `, about ${Math.ceil(job.eta_s)} s left` : "";
  const frames = job.frames ? ` · ${job.kept_frames} of ${job.frames} frames kept` : "";
  setText("detail-status", `${job.status} (${Math.round(100 * job.progress)} %${eta})${frames}` +
    (job.error ? ` — ${job.error}` : ""));
  const sizes = $("sizes");
  sizes.replaceChildren();
  const max = Math.max(job.sizes.source_bytes, job.sizes.bundle_bytes || 0);
  for (const [label, bytes, cls] of [["source", job.sizes.source_bytes, ""], ["bundle", job.sizes.bundle_bytes, "bundle"]]) {
    const line = document.createElement("div"); line.className = "sizes-row";
    const name = document.createElement("span"); name.className = "label"; name.textContent = `${label} ${fmtBytes(bytes)}`;
    const bar = document.createElement("div"); bar.className = "bar";
    const fill = document.createElement("div"); fill.className = `fill ${cls}`;
    fill.style.width = `${bytes ? (100 * bytes / max).toFixed(1) : 0}%`;
    bar.append(fill); line.append(name, bar); sizes.append(line);
  }
  if (job.sizes.ratio != null) {
    const note = document.createElement("p"); note.className = "muted";
    note.textContent = `bundle = ${(100 * job.sizes.ratio).toFixed(1)} % of the source`;
    note.id = "ratio";
    sizes.append(note);
  }
  $("rec-btn").disabled = job.status !== "done";
}

async function loadModels() {
  try {
    const models = await (await api("/models")).json();
    $("rec-name").replaceChildren(...models.reconstructors.map((r) => new Option(r, r, r === models.defaults.reconstructor, r === models.defaults.reconstructor)));
    $("rec-codec").replaceChildren(...(models.output_codecs || ["h264"]).map((c) => new Option(c, c)));
  } catch (e) {
    setText("conn", `cannot read /models: ${e.message}`);
  }
}

function recQuery() {
  const params = new URLSearchParams({ reconstructor: $("rec-name").value, codec: $("rec-codec").value, quality: $("rec-quality").value });
  return params.toString();
}

$("rec-form").addEventListener("submit", (event) => { event.preventDefault(); reconstruct(); });
$("rec-cancel").addEventListener("click", async () => {
  try { await api(`/jobs/${state.selected}/cancel?${recQuery()}`, { method: "POST" }); } catch (e) { setText("rec-status", e.message); }
});

async function reconstruct() {
  const id = state.selected;
  clearPlayers();
  const query = recQuery();
  $("rec-cancel").hidden = false;
  try {
    for (;;) {
      const response = await api(`/reconstruct/${id}?${query}`);
      if (response.status === 200) {
        setVideo("rec-video", await response.blob());
        break;
      }
      const body = await response.json();
      const eta = body.eta_s != null ? `, about ${Math.ceil(body.eta_s)} s left` : "";
      setText("rec-status", `reconstruction ${body.status} (${Math.round(100 * body.progress)} %${eta})`);
      if (body.status === "canceled") return;
      const wait = Number(response.headers.get("Retry-After") || "1");
      await new Promise((r) => setTimeout(r, 1000 * Math.min(wait, 5)));
      if (state.selected !== id) return;
    }
  } catch (e) {
    setText("rec-status", `reconstruction failed: ${e.message}`);
    return;
  } finally {
    $("rec-cancel").hidden = true;
  }
  setText("rec-status", "reconstruction ready");
  await loadSource(id);
  await loadQuality(id, query);
  $("controls").hidden = false;
}

async function loadSource(id) {
  try {
    setVideo("source-video", await (await api(`/sources/${id}`)).blob());
    setText("source-note", "");
  } catch (e) {
    setText("source-note", `source not available: ${e.message}`);
  }
}

async function loadQuality(id, query) {
  state.quality = await (await api(`/quality/${id}?${query}`)).json();
  drawTimeline();
  drawPsnr();
}

function setVideo(id, blob) {
  const url = URL.createObjectURL(blob);
  state.urls.push(url);
  $(id).src = url;
}

function clearPlayers() {
  for (const id of ["source-video", "rec-video"]) { $(id).removeAttribute("src"); $(id).load(); }
  state.urls.forEach((u) => URL.revokeObjectURL(u));
  state.urls = [];
  state.quality = null;
  $("timeline").replaceChildren();
  $("psnr-plot").replaceChildren();
  $("controls").hidden = true;
  setText("psnr-note", "");
  setText("rec-status", "");
}

// --- synchronised playback -----------------------------------------------------------------
const rec = $("rec-video"), src = $("source-video");
$("play").addEventListener("click", () => {
  if (rec.paused) { src.currentTime = rec.currentTime; rec.play(); if (src.src) src.play(); $("play").textContent = "Pause both"; }
  else { rec.pause(); src.pause(); $("play").textContent = "Play both"; }
});
rec.addEventListener("timeupdate", () => {
  if (src.src && Math.abs(src.currentTime - rec.currentTime) > 0.15) src.currentTime = rec.currentTime;
  drawPlayhead();
});
rec.addEventListener("ended", () => { $("play").textContent = "Play both"; });
$("timeline").addEventListener("click", (event) => {
  const box = $("timeline").getBoundingClientRect();
  const t = ((event.clientX - box.left) / box.width) * duration();
  rec.currentTime = t; if (src.src) src.currentTime = t;
});

function duration() {
  const q = state.quality;
  if (!q || !q.times.length) return rec.duration || 1;
  const last = q.times[q.times.length - 1];
  return last + (q.times.length > 1 ? last - q.times[q.times.length - 2] : 0.04);
}

function frameAt(t) {
  const times = state.quality ? state.quality.times : [];
  let lo = 0, hi = times.length - 1;
  while (lo < hi) { const mid = (lo + hi + 1) >> 1; if (times[mid] <= t + 1e-6) lo = mid; else hi = mid - 1; }
  return lo;
}

const SVG = "http://www.w3.org/2000/svg";
function svg(tag, attrs) {
  const el = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, v);
  return el;
}

function drawTimeline() {
  const q = state.quality, line = $("timeline");
  line.replaceChildren(svg("rect", { x: 0, y: 14, width: 1000, height: 12, fill: "#e5e7eb" }));
  const d = duration();
  for (const i of q.kept) {
    line.append(svg("rect", { class: "kept", x: (1000 * q.times[i] / d).toFixed(2), y: 6, width: 3, height: 28, fill: "#f59e0b" }));
  }
  line.append(svg("line", { id: "playhead", x1: 0, x2: 0, y1: 0, y2: 40, stroke: "#dc2626", "stroke-width": 3 }));
}

function drawPsnr() {
  const q = state.quality, plot = $("psnr-plot");
  plot.replaceChildren();
  if (!q.psnr) {
    setText("psnr-note", "per-frame PSNR needs the source: upload with “keep the source” checked");
    return;
  }
  const lo = Math.max(0, Math.floor(Math.min(...q.psnr) / 5) * 5), hi = Math.min(60, Math.ceil(Math.max(...q.psnr) / 5) * 5 || 60);
  const x = (i) => (1000 * i / Math.max(1, q.frames - 1)).toFixed(2);
  const y = (v) => (210 - 200 * (v - lo) / Math.max(1, hi - lo)).toFixed(2);
  for (let v = lo; v <= hi; v += 5) {
    plot.append(svg("line", { x1: 0, x2: 1000, y1: y(v), y2: y(v), stroke: "#e5e7eb" }));
    const label = svg("text", { x: 4, y: Number(y(v)) - 2, "font-size": 11, fill: "#6b7280" }); label.textContent = `${v} dB`;
    plot.append(label);
  }
  plot.append(svg("polyline", { id: "psnr-line", points: q.psnr.map((v, i) => `${x(i)},${y(v)}`).join(" "), fill: "none", stroke: "#2563eb", "stroke-width": 2 }));
  for (const i of q.kept) plot.append(svg("circle", { class: "kept", cx: x(i), cy: y(q.psnr[i]), r: 3, fill: "#f59e0b" }));
  plot.append(svg("line", { id: "psnr-playhead", x1: 0, x2: 0, y1: 0, y2: 220, stroke: "#dc2626", "stroke-width": 2 }));
  setText("psnr-note", `mean PSNR ${q.psnr_mean != null ? q.psnr_mean.toFixed(2) : "–"} dB over ${q.frames} frames; ` +
    `${q.kept.length} kept; output ${fmtBytes(q.sizes.output_bytes)}`);
}

function drawPlayhead() {
  if (!state.quality) return;
  const t = rec.currentTime, d = duration();
  const head = $("playhead");
  if (head) { head.setAttribute("x1", 1000 * t / d); head.setAttribute("x2", 1000 * t / d); }
  const i = frameAt(t), ph = $("psnr-playhead");
  const xi = 1000 * i / Math.max(1, state.quality.frames - 1);
  if (ph) { ph.setAttribute("x1", xi); ph.setAttribute("x2", xi); }
  const psnr = state.quality.psnr ? ` · ${state.quality.psnr[i].toFixed(2)} dB` : "";
  setText("clock", `frame ${i + 1} / ${state.quality.frames}${state.quality.kept.includes(i) ? " (kept)" : ""}${psnr}`);
}

// --- start ---------------------------------------------------------------------------------
loadModels();
refreshList();
state.poll = setInterval(() => { refreshList(); if (state.selected && state.job && !["done", "failed", "canceled"].includes(state.job.status)) showJob(); }, 2000);
