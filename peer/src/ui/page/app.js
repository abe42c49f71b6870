// idlegrid's page: listens to /api/events (server-sent events, one JSON state per
// event) and redraws. No framework, no build step; served from inside the binary.
"use strict";

const $ = (sel) => document.querySelector(sel);
const ACTION = { "X-Idlegrid": "1" };
let state = null;
let sortKey = "done";
let sortUp = false;

function short(id) {
  return id.length > 12 ? id.slice(0, 6) + "…" + id.slice(-4) : id;
}

function bytes(n) {
  if (n >= 1 << 30) return (n / (1 << 30)).toFixed(1) + " GiB";
  if (n >= 1 << 20) return (n / (1 << 20)).toFixed(1) + " MiB";
  if (n >= 1 << 10) return (n / 1024).toFixed(1) + " KiB";
  return n + " B";
}

function rate(x) {
  if (x >= 1e9) return Math.round(x / 1e9) + "G";
  if (x >= 1e6) return Math.round(x / 1e6) + "M";
  if (x >= 1e3) return Math.round(x / 1e3) + "k";
  return String(Math.round(x));
}

function duration(s) {
  if (s == null) return "–";
  s = Math.round(s);
  const h = Math.floor(s / 3600), m = Math.floor((s % 3600) / 60), r = s % 60;
  return h ? `${h}h${String(m).padStart(2, "0")}m` : m ? `${m}m${String(r).padStart(2, "0")}s` : `${r}s`;
}

function el(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (k === "class") e.className = v;
    else if (k.startsWith("on")) e.addEventListener(k.slice(2), v);
    else if (v !== undefined && v !== null) e.setAttribute(k, v);
  }
  for (const c of children) e.append(c instanceof Node ? c : String(c));
  return e;
}

// The chunk map: run-length text (see grid/watch.rs) to one byte per chunk.
function decodeMap(text) {
  const out = [];
  let i = 0;
  while (i < text.length) {
    const c = text[i++];
    let j = i;
    while (j < text.length && text[j] >= "0" && text[j] <= "9") j++;
    const run = j > i ? parseInt(text.slice(i, j), 10) : 1;
    i = j;
    for (let k = 0; k < run; k++) out.push(c);
  }
  return out;
}

const COLOURS = { ".": [217, 217, 217], "!": [240, 160, 64], "#": [46, 158, 91], "+": [155, 89, 182] };
const RUN = [74, 144, 217];

function drawMap(canvas, cells) {
  const n = Math.max(cells.length, 1);
  const cols = Math.min(n, Math.max(40, Math.ceil(Math.sqrt(n * 5))));
  const rows = Math.ceil(n / cols);
  canvas.width = cols;
  canvas.height = rows;
  const ctx = canvas.getContext("2d");
  const img = ctx.createImageData(cols, rows);
  for (let i = 0; i < cols * rows; i++) {
    const c = cells[i];
    const rgb = c === undefined ? [255, 255, 255] : COLOURS[c] || RUN;
    img.data.set([rgb[0], rgb[1], rgb[2], 255], i * 4);
  }
  ctx.putImageData(img, 0, 0);
}

function jobCard(job) {
  const id = job.id;
  let card = document.getElementById("job-" + id);
  if (!card) {
    card = el("div", { class: "job", id: "job-" + id },
      el("div", { class: "left" },
        el("h3", {}, ""),
        el("div", { class: "bar" }, el("div", {})),
        el("div", { class: "facts" }),
        el("canvas", { class: "map", title: "one cell per chunk" }),
        el("div", { class: "legend" },
          ...[["wait", "waiting"], ["retry", "failed, back in queue"], ["run", "in flight (hover: peer)"],
            ["spec", "speculated"], ["done", "verified"]].map(([c, t]) =>
              el("span", {}, el("i", { style: `background: var(--${c})` }), t))),
        el("div", { class: "links" })),
      el("div", { class: "right" }));
    $("#jobs").append(card);
  }
  card.querySelector("h3").textContent = `#${id} ${job.title} · ${job.kernel} · ${job.phase}`;
  const pct = job.units_total ? (100 * job.units_done) / job.units_total : 0;
  card.querySelector(".bar > div").style.width = pct.toFixed(1) + "%";
  const facts = card.querySelector(".facts");
  facts.replaceChildren(
    el("span", {}, `${job.units_done}/${job.units_total} ${job.unit} (${pct.toFixed(0)}%)`),
    el("span", {}, `chunks ${job.verified}/${job.chunks}`),
    el("span", {}, `in flight ${job.in_flight}`),
    el("span", {}, `elapsed ${duration(job.elapsed_seconds)}`),
    el("span", {}, `ETA ${duration(job.eta_seconds)}`),
    el("span", { class: "dim" }, `assigned ${job.assignments}, speculated ${job.speculative}, requeued ${job.requeued}, checks ${job.checks}`),
  );
  if (job.error) facts.append(el("span", { class: "error" }, job.error));
  const cells = decodeMap(job.map);
  const canvas = card.querySelector("canvas.map");
  canvas.dataset.chunks = cells.length;
  canvas.dataset.verified = cells.filter((c) => c === "#").length;
  canvas.dataset.peers = job.peers.map((p) => p.peer_id).join(" ");
  drawMap(canvas, cells);
  canvas.onmousemove = (ev) => {
    const r = canvas.getBoundingClientRect();
    const x = Math.floor(((ev.clientX - r.left) / r.width) * canvas.width);
    const y = Math.floor(((ev.clientY - r.top) / r.height) * canvas.height);
    const i = y * canvas.width + x, c = cells[i];
    const letters = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz";
    const peer = letters.indexOf(c) >= 0 ? job.peers[letters.indexOf(c)] : null;
    canvas.title = c === undefined ? "" : `chunk ${i}: ` + (peer ? `in flight on ${short(peer.peer_id)}` :
      { ".": "waiting", "!": "failed, waiting again", "#": "verified", "+": "speculated", "*": "in flight" }[c]);
  };
  const links = card.querySelector(".links");
  links.replaceChildren();
  if (job.report) links.append(el("a", { href: `/api/jobs/${id}/report.json`, download: "" }, "report (JSON)"), " ");
  // Every file the job wrote (a page job's mask and overlay, MP4, or a wasm job's
  // outputs as they are written), each downloadable.
  if (job.outputs_total) {
    const more = job.outputs_total - job.outputs.length;
    const list = el("ul", { class: "outputs" }, ...job.outputs.map(([n, name]) =>
      el("li", {}, el("a", { href: `/api/jobs/${id}/outputs/${n}`, download: name.split("/").pop(), class: "output", "data-name": name }, name))));
    links.append(el("div", { class: "dim" }, `outputs written: ${job.outputs_total}` + (more > 0 ? ` (the newest ${job.outputs.length} listed)` : "")), list);
  }
  const right = card.querySelector(".right");
  if (job.partial_version != null) {
    let img = right.querySelector("img.partial");
    if (!img) {
      img = el("img", { class: "partial", id: "partial-" + id, alt: "the mask so far" });
      right.append(el("div", { class: "dim" }, "the mask so far"), img);
    }
    if (img.dataset.version !== String(job.partial_version)) {
      img.dataset.version = job.partial_version;
      img.src = `/api/jobs/${id}/partial.png?v=${job.partial_version}`;
    }
  } else if (job.kernel === "video") {
    let img = right.querySelector("img.thumbnail");
    if (!img) {
      img = el("img", { class: "thumbnail", id: "thumbnail-" + id, alt: "the newest segment" });
      right.append(el("div", { class: "segments" }), img, el("div", { class: "dim" }, "first frame of the newest verified segment"));
    }
    right.querySelector(".segments").textContent = `segments verified: ${job.verified}/${job.chunks}`;
    if (job.thumbnail_version != null && img.dataset.version !== String(job.thumbnail_version)) {
      img.dataset.version = job.thumbnail_version;
      img.src = `/api/jobs/${id}/thumbnail.png?v=${job.thumbnail_version}`;
    }
  }
}

// One row per peer: what the network knows, with the newest job's figures for it.
function peerRows(s) {
  const rows = new Map();
  for (const n of s.network) {
    rows.set(n.id, { id: n.id, agent: n.agent || "", found: n.found_by.join("+"), route: n.route || (n.connected ? "" : "gone"),
      rtt: n.rtt_ms, score: null, trust: "", breaker: "", done: 0, flight: 0, sent: n.bytes_sent, received: 0, banned: false });
  }
  for (const job of s.jobs) {
    for (const p of job.peers) {
      const r = rows.get(p.peer_id) || { id: p.peer_id, agent: p.role === "local" ? "this machine" : "", found: "",
        route: p.role === "local" ? "local" : "", rtt: null, sent: 0 };
      r.found = r.found || p.found_by.join("+");
      r.score = p.bench_score;
      r.trust = p.role === "local" ? "trusted" : `${p.results_confirmed} confirmed, ${p.results_believed} believed, ${p.verified_in_a_row} in a row`;
      r.breaker = p.breaker + (p.left ? " (left)" : "");
      r.done = p.chunks_done;
      r.flight = p.in_flight;
      r.received = p.bytes_received;
      r.banned = p.banned;
      rows.set(p.peer_id, r);
    }
  }
  return [...rows.values()];
}

function renderPeers(s) {
  const filter = $("#filter").value.trim().toLowerCase();
  let rows = peerRows(s).filter((r) => !filter || JSON.stringify(r).toLowerCase().includes(filter));
  rows.sort((a, b) => {
    const x = a[sortKey], y = b[sortKey];
    const c = typeof x === "number" || typeof y === "number" ? (x ?? -1) - (y ?? -1) : String(x).localeCompare(String(y));
    return sortUp ? c : -c;
  });
  const body = $("#peers tbody");
  body.replaceChildren(...rows.map((r) => el("tr", { "data-peer": r.id },
    el("td", { class: "mono", title: r.id }, short(r.id),
      el("button", { class: "copy", title: "copy the whole PeerId", onclick: () => navigator.clipboard && navigator.clipboard.writeText(r.id) }, "copy")),
    el("td", {}, r.agent), el("td", {}, r.found), el("td", {}, r.route),
    el("td", { class: "num" }, r.rtt == null ? "" : Math.round(r.rtt) + " ms"),
    el("td", { class: "num" }, r.score == null ? "" : rate(r.score)),
    el("td", { class: r.banned ? "banned" : "" }, r.banned ? "BANNED " + r.trust : r.trust),
    el("td", {}, r.breaker), el("td", { class: "num" }, r.done), el("td", { class: "num" }, r.flight),
    el("td", { class: "num" }, bytes(r.sent || 0)), el("td", { class: "num" }, bytes(r.received || 0)))));
  for (const th of document.querySelectorAll("#peers th")) {
    th.classList.toggle("sorted", th.dataset.key === sortKey);
    th.classList.toggle("up", th.dataset.key === sortKey && sortUp);
  }
}

function renderMachine(s) {
  $("#machine").replaceChildren(el("ul", {},
    el("li", {}, `cores ${s.cores}; blob store ${bytes(s.store_used)} used, ${bytes(s.store_reserved)} reserved for blobs arriving`),
    el("li", {}, `chunk runs of this peer's jobs going now: ${s.chunk_runs}`),
    el("li", {}, `up ${duration(s.uptime_seconds)}`)));
  const v = s.volunteer;
  const box = $("#volunteer");
  if (!v) {
    box.replaceChildren(el("p", { class: "dim" }, "This peer does not lend its cores (idlegrid serve --ui does)."));
    return;
  }
  const button = el("button", { id: "pause", onclick: () => post(v.paused ? "/api/resume" : "/api/pause") },
    v.paused ? "Resume lending" : "Pause lending");
  box.replaceChildren(
    el("p", {}, el("strong", { id: "policy" }, v.summary), " ", button),
    el("ul", {}, ...v.settings.map((t) => el("li", {}, t)), ...v.notes.map((t) => el("li", { class: "dim" }, t)),
      el("li", {}, `chunks in hand now: ${v.working}`)),
    requestersTable(v.requesters),
    v.refusals.length ? el("details", {}, el("summary", {}, `${v.refusals.length} recent refusals`),
      el("ul", {}, ...v.refusals.slice(-20).map(([p, why]) => el("li", {}, `${short(p)}: ${why}`)))) : "");
}

// Whom this volunteer computes for: one row per requesting peer, newest first.
function requestersTable(list) {
  if (!list || !list.length) return el("p", { class: "dim", id: "requesters" }, "No chunks run for anyone yet.");
  const head = ["chunks run for", "done", "failed", "cancelled", "in hand", "compute", "results", "sent", "last"];
  return el("table", { id: "requesters" },
    el("thead", {}, el("tr", {}, ...head.map((h, i) => el("th", { class: i ? "num" : "" }, h)))),
    el("tbody", {}, ...list.map((r) => el("tr", { "data-peer": r.id },
      el("td", { class: "mono", title: r.id }, short(r.id)),
      el("td", { class: "num" }, r.done), el("td", { class: "num" }, r.failed),
      el("td", { class: "num" }, r.cancelled), el("td", { class: "num" }, r.in_hand),
      el("td", { class: "num" }, duration(r.compute_ms / 1000)),
      el("td", { class: "num" }, bytes(r.result_bytes)), el("td", { class: "num" }, bytes(r.bytes_sent)),
      el("td", { class: "num" }, duration(r.seconds_ago) + " ago")))));
}

function renderLog(s) {
  $("#log").replaceChildren(...s.log.slice(-50).map((l) =>
    el("li", { class: l.level }, `${new Date(l.at * 1000).toLocaleTimeString()} ${l.level} ${l.message}`)));
}

function render(s) {
  state = s;
  $("#me").textContent = short(s.me);
  $("#me").title = s.me;
  $("#agent").textContent = s.agent;
  if (s.jobs.length) {
    const empty = $("#jobs > p");
    if (empty) empty.remove();
  }
  for (const job of s.jobs) jobCard(job);
  renderPeers(s);
  renderMachine(s);
  renderLog(s);
  $("#start-section").hidden = !s.can_start;
}

async function post(url, body) {
  const r = await fetch(url, { method: "POST", headers: { ...ACTION, "Content-Type": "application/json" }, body: body ? JSON.stringify(body) : undefined });
  if (!r.ok) alert(await r.text());
  return r;
}

// Uploads `file` to this peer's upload slot `slot`, saying so in `status`.
async function upload(slot, file, status) {
  status.textContent = `uploading ${file.name}…`;
  const r = await fetch(`/api/uploads/${slot}?name=${encodeURIComponent(file.name)}`, { method: "PUT", headers: ACTION, body: file });
  if (!r.ok) throw new Error(await r.text());
}

// Runs a form's start: `prepare` (uploads, checks) and then `POST /api/jobs` with the
// request it returns; `status` says how it went (the command line's error if not).
async function submitJob(ev, statusId, prepare) {
  ev.preventDefault();
  const status = $(statusId);
  try {
    const request = await prepare(status);
    status.textContent = "starting…";
    const r = await fetch("/api/jobs", { method: "POST", headers: { ...ACTION, "Content-Type": "application/json" },
      body: JSON.stringify(request) });
    if (!r.ok) throw new Error(await r.text());
    const { id } = await r.json();
    status.textContent = `job #${id} started`;
    status.className = "dim";
  } catch (e) {
    status.textContent = e.message;
    status.className = "error";
  }
}

function startJob(ev) {
  return submitJob(ev, "#start-status", async (status) => {
    for (const slot of ["before", "after"]) {
      const file = $("#" + slot).files[0];
      if (!file) throw new Error(`pick the ${slot} image`);
      await upload(slot, file, status);
    }
    return { kernel: "change", method: $("#method").value, overlay: $("#overlay").checked };
  });
}

function startVideo(ev) {
  return submitJob(ev, "#video-status", async () =>
    ({ kernel: "video", frames: $("#frames").value, fps: $("#fps").value }));
}

function startWasm(ev) {
  return submitJob(ev, "#wasm-status", async (status) => {
    const file = $("#module").files[0];
    if (!file) throw new Error("pick the module (.wasm)");
    await upload("module", file, status);
    return { kernel: "wasm", range: $("#range").value, args: $("#wasm-args").value,
      output: $("#wasm-output").value, join: $("#join").checked, fuel: $("#fuel").value, memory: $("#memory").value };
  });
}

function connect() {
  const source = new EventSource("/api/events");
  source.addEventListener("state", (ev) => {
    $("#live").className = "live on";
    $("#live").textContent = "live";
    render(JSON.parse(ev.data));
  });
  source.onerror = () => {
    $("#live").className = "live off";
    $("#live").textContent = "reconnecting";
  };
}

for (const th of document.querySelectorAll("#peers th")) {
  th.addEventListener("click", () => {
    if (sortKey === th.dataset.key) sortUp = !sortUp;
    else { sortKey = th.dataset.key; sortUp = false; }
    if (state) renderPeers(state);
  });
}
$("#filter").addEventListener("input", () => state && renderPeers(state));
$("#start-form").addEventListener("submit", startJob);
$("#video-form").addEventListener("submit", startVideo);
$("#wasm-form").addEventListener("submit", startWasm);
connect();
