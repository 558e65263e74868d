// moe-ts live routing dashboard (browser side; plain JS, no build step).
// Mode is chosen by what the server answers: GET /v1/moe/expert-load → serving (SSE of
// moe.expert_load objects, see src/serve/dashboard.ts); else HEAD /v1/train/metrics → training
// (SSE of the run's metrics.jsonl records, src/train/trainer.ts StepReport). `?mode=serve|train`
// forces one. Series are drawn with uPlot, the layers × experts heatmap on a canvas.
// What is drawn is mirrored in `window.__dashboard` and in the heatmap canvas's data-counts /
// data-layers attributes, so a test (or a curious user) can read the exact numbers.
// Not: the server (src/serve/dashboard.ts, src/cli/dashboard.ts).
"use strict";
(() => {
  const SERVE_POINTS = 900; // serving: the last 900 events (15 min at 1 event/s)
  const TRAIN_POINTS = 200000; // training: every step of any realistic run
  const HISTORY = 240; // columns of the routing-over-time strip

  const state = {
    mode: null,
    events: 0,
    lastEventAt: 0,
    error: null,
    heatmap: { title: "", layers: [], counts: [], shares: [] },
    series: {}, // chart key → number of points drawn
    history: {}, // layer → array of share vectors (oldest first)
    drawMs: null, // the last frame's drawing time: { series, heatmap, history } in ms
  };
  window.__dashboard = state;

  const $ = (id) => document.getElementById(id);
  const charts = new Map(); // key → { x, ys, plot, dirty, names }
  let layerKey = ""; // the layer ids the charts were built for
  let prevServe = null;
  let drawQueued = false;

  // ---- colours -------------------------------------------------------------------------
  const VIRIDIS = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  function ramp(t) {
    const x = Math.min(1, Math.max(0, t)) * (VIRIDIS.length - 1);
    const i = Math.min(VIRIDIS.length - 2, Math.floor(x)), f = x - i;
    const c = VIRIDIS[i].map((a, k) => Math.round(a + (VIRIDIS[i + 1][k] - a) * f));
    return `rgb(${c[0]},${c[1]},${c[2]})`;
  }
  const LUT = Array.from({ length: 256 }, (_, i) => ramp(i / 255).match(/\d+/g).map(Number));
  const LUT_CSS = LUT.map((c) => `rgb(${c[0]},${c[1]},${c[2]})`);
  const color = (t) => LUT_CSS[Math.min(255, Math.max(0, Math.round(t * 255)))];
  const seriesColor = (i, n) => `hsl(${Math.round((360 * i) / Math.max(n, 1)) % 360} 65% 45%)`;

  // ---- series (uPlot) ------------------------------------------------------------------
  function fmtTick(v) {
    if (v == null) return "";
    const a = Math.abs(v);
    if (a === 0) return "0";
    if (a < 0.01 || a >= 1e6) return v.toExponential(1);
    return String(+v.toPrecision(4));
  }
  function chart(key, title, names, opts = {}) {
    if (charts.has(key)) return charts.get(key);
    const box = document.createElement("div");
    box.className = "chart";
    box.dataset.key = key;
    $("charts").appendChild(box);
    const width = Math.max(320, box.clientWidth - 4);
    const plot = new uPlot({
      title, width, height: 170,
      scales: { x: { time: state.mode === "serve" } },
      series: [{ label: state.mode === "serve" ? "time" : "step" }, ...names.map((n, i) => ({
        label: n, stroke: seriesColor(i, names.length), width: 1.5, spanGaps: true,
        value: (u, v) => (v == null ? "–" : Math.abs(v) >= 100 || v === 0 ? v.toFixed(opts.digits ?? 1) : v.toPrecision(3)),
      }))],
      axes: [{}, { size: 60, values: (u, vals) => vals.map(fmtTick) }],
      legend: { live: true },
    }, [[], ...names.map(() => [])], box);
    const c = { x: [], ys: names.map(() => []), plot, dirty: false, names, box };
    charts.set(key, c);
    return c;
  }
  function push(key, x, vals) {
    const c = charts.get(key);
    if (!c) return;
    c.x.push(x);
    c.ys.forEach((y, i) => y.push(vals[i] == null || !Number.isFinite(vals[i]) ? null : vals[i]));
    const max = state.mode === "serve" ? SERVE_POINTS : TRAIN_POINTS;
    if (c.x.length > max) {
      c.x.splice(0, c.x.length - max);
      c.ys.forEach((y) => y.splice(0, y.length - max));
    }
    c.dirty = true;
  }
  function resetAll() {
    charts.forEach((c) => { c.plot.destroy(); c.box.remove(); });
    charts.clear();
    layerKey = "";
    prevServe = null;
    state.series = {};
    state.history = {};
    state.heatmap = { title: "", layers: [], counts: [], shares: [] };
    $("history-layer").innerHTML = "";
    schedule();
  }

  // ---- heatmap -------------------------------------------------------------------------
  const HM = { left: 44, top: 18, maxCell: 56, minCell: 3 };
  function drawHeatmap() {
    const cv = $("heatmap"), { layers, counts, shares } = state.heatmap;
    const L = layers.length, E = L ? counts[0].length : 0;
    cv.dataset.counts = JSON.stringify(counts);
    cv.dataset.layers = JSON.stringify(layers);
    const avail = Math.max(200, cv.parentElement.clientWidth - 2);
    const cw = E ? Math.max(HM.minCell, Math.min(HM.maxCell, Math.floor((avail - HM.left) / E))) : 0;
    const ch = L ? Math.max(HM.minCell, Math.min(26, Math.floor(480 / L))) : 0;
    cv.width = Math.max(200, HM.left + E * cw + 2);
    cv.height = HM.top + L * ch + 2;
    Object.assign(HM, { cw, ch, L, E });
    const g = cv.getContext("2d");
    g.fillStyle = "#fff";
    g.fillRect(0, 0, cv.width, cv.height);
    let top = 0;
    for (const row of shares) for (const s of row) top = Math.max(top, s);
    const vmax = Math.max(top, E ? 2 / E : 1);
    HM.vmax = vmax;
    for (let r = 0; r < L; r++) {
      const rowSum = counts[r].reduce((a, b) => a + b, 0);
      for (let e = 0; e < E; e++) {
        g.fillStyle = rowSum > 0 ? color(shares[r][e] / vmax) : "#e5e7eb";
        g.fillRect(HM.left + e * cw, HM.top + r * ch, Math.max(1, cw - (cw > 6 ? 1 : 0)), Math.max(1, ch - (ch > 6 ? 1 : 0)));
      }
    }
    g.fillStyle = "#374151";
    g.font = "11px system-ui, sans-serif";
    g.textBaseline = "middle";
    const rowStep = Math.ceil(12 / Math.max(ch, 1));
    for (let r = 0; r < L; r += rowStep) g.fillText(`L${layers[r]}`, 4, HM.top + r * ch + ch / 2);
    const colStep = Math.ceil(22 / Math.max(cw, 1));
    g.textBaseline = "alphabetic";
    for (let e = 0; e < E; e += colStep) g.fillText(String(e), HM.left + e * cw + 1, HM.top - 5);
    $("legend-max").textContent = `${(vmax * 100).toFixed(1)}%`;
    const lg = $("legend-bar").getContext("2d");
    for (let x = 0; x < 160; x++) { lg.fillStyle = ramp(x / 159); lg.fillRect(x, 0, 1, 10); }
    $("heat-title").textContent = state.heatmap.title;
  }
  function cellAt(ev) {
    const cv = $("heatmap"), rect = cv.getBoundingClientRect();
    const x = ((ev.clientX - rect.left) * cv.width) / rect.width, y = ((ev.clientY - rect.top) * cv.height) / rect.height;
    const e = Math.floor((x - HM.left) / HM.cw), r = Math.floor((y - HM.top) / HM.ch);
    return r >= 0 && r < HM.L && e >= 0 && e < HM.E ? { r, e } : null;
  }
  function tooltip(ev) {
    const tip = $("tooltip"), cell = cellAt(ev);
    if (!cell) { tip.hidden = true; return; }
    const { layers, counts, shares } = state.heatmap;
    tip.textContent = `layer ${layers[cell.r]} · expert ${cell.e}: ${counts[cell.r][cell.e]} tokens (${(shares[cell.r][cell.e] * 100).toFixed(1)}%)`;
    const box = $("heatmap").parentElement.parentElement.getBoundingClientRect();
    tip.style.left = `${ev.clientX - box.left + 12}px`;
    tip.style.top = `${ev.clientY - box.top + 12}px`;
    tip.hidden = false;
  }

  // routing over time: one layer, experts × the latest HISTORY events
  function drawHistory() {
    const cv = $("history"), sel = $("history-layer");
    const rows = state.history[sel.value] || [];
    const E = rows.length ? rows[rows.length - 1].length : 0;
    const ch = E ? Math.max(2, Math.min(12, Math.floor(200 / E))) : 0;
    cv.width = Math.max(200, cv.parentElement.clientWidth - 2);
    cv.height = Math.max(40, E * ch + 4);
    const g = cv.getContext("2d");
    g.fillStyle = "#fff";
    g.fillRect(0, 0, cv.width, cv.height);
    if (!E) return;
    // one pixel per (event, expert) in an ImageData, scaled up without smoothing
    const T = rows.length, img = new ImageData(T, E);
    let vmax = 2 / E;
    for (const sh of rows) for (const v of sh) if (v > vmax) vmax = v;
    for (let t = 0; t < T; t++) {
      const sh = rows[t];
      for (let e = 0; e < E && e < sh.length; e++) {
        const c = LUT[Math.min(255, Math.round((sh[e] / vmax) * 255))], o = (e * T + t) * 4;
        img.data[o] = c[0]; img.data[o + 1] = c[1]; img.data[o + 2] = c[2]; img.data[o + 3] = 255;
      }
    }
    const off = document.createElement("canvas");
    off.width = T;
    off.height = E;
    off.getContext("2d").putImageData(img, 0, 0);
    g.imageSmoothingEnabled = false;
    const cw = (cv.width - 30) / Math.max(T, 60);
    g.drawImage(off, 30, 2, cw * T, E * ch);
    g.fillStyle = "#374151";
    g.font = "10px system-ui, sans-serif";
    g.textBaseline = "top";
    g.fillText("e0", 2, 2);
    g.textBaseline = "bottom";
    g.fillText(`e${E - 1}`, 2, 2 + E * ch);
  }


  function setHeatmap(title, layers, counts) {
    const shares = counts.map((row) => {
      const s = row.reduce((a, b) => a + b, 0);
      return row.map((c) => (s > 0 ? c / s : 0));
    });
    state.heatmap = { title, layers, counts, shares };
    const sel = $("history-layer");
    layers.forEach((l, r) => {
      const key = String(l);
      if (!state.history[key]) {
        state.history[key] = [];
        const o = document.createElement("option");
        o.value = key;
        o.textContent = `layer ${l}`;
        sel.appendChild(o);
      }
      const h = state.history[key];
      h.push(shares[r]);
      if (h.length > HISTORY) h.shift();
    });
  }

  // ---- drawing loop --------------------------------------------------------------------
  function schedule() {
    if (drawQueued) return;
    drawQueued = true;
    requestAnimationFrame(() => {
      drawQueued = false;
      const t0 = performance.now();
      charts.forEach((c, key) => {
        if (c.dirty) { c.plot.setData([c.x, ...c.ys]); c.dirty = false; }
        state.series[key] = c.x.length;
      });
      const t1 = performance.now();
      drawHeatmap();
      const t2 = performance.now();
      drawHistory();
      state.drawMs = { series: t1 - t0, heatmap: t2 - t1, history: performance.now() - t2 };
    });
  }
  function status(text, isError = false) {
    const el = $("status");
    el.textContent = text;
    el.classList.toggle("error", isError);
    if (isError) state.error = text;
  }
  setInterval(() => {
    if (!state.lastEventAt) return;
    status(`${state.events} events · last ${((Date.now() - state.lastEventAt) / 1000).toFixed(1)} s ago`);
  }, 1000);

  function buildLayerCharts(layers, defs) {
    const key = layers.join(",");
    if (key === layerKey) return;
    resetAll();
    layerKey = key;
    const names = layers.map((l) => `L${l}`);
    for (const [k, title, own] of defs) chart(k, title, own ?? names);
  }

  // ---- serving -------------------------------------------------------------------------
  function onServe(m) {
    const layers = m.layers.map((x) => x.layer);
    buildLayerCharts(layers, [
      ["tokens_per_s", "Generated tokens/s", ["tokens/s"]],
      ["ttft", "Time to first token, recent (ms)", ["TTFT ms"]],
      ["requests", "Requests", ["running", "waiting"]],
      ["kv", "KV-cache usage (%)", ["KV %"]],
      ["max_over_mean", "Max/mean expert load per layer (window)"],
      ["entropy", "Router entropy per layer (normalised, window)"],
    ]);
    const t = m.timestamp / 1000, e = m.engine;
    let tps = null;
    if (prevServe && m.timestamp > prevServe.timestamp) tps = ((e.generated_tokens - prevServe.engine.generated_tokens) * 1000) / (m.timestamp - prevServe.timestamp);
    prevServe = m;
    push("tokens_per_s", t, [tps]);
    push("ttft", t, [e.ttft_ms_recent]);
    push("requests", t, [e.running, e.waiting]);
    push("kv", t, [e.kv_cache_usage * 100]);
    push("max_over_mean", t, m.layers.map((x) => x.max_over_mean));
    push("entropy", t, m.layers.map((x) => x.entropy));
    setHeatmap("Tokens per expert over the recent window (colour: share of the layer's tokens)", layers, m.layers.map((x) => x.window_tokens_per_expert.slice()));
  }

  // ---- training ------------------------------------------------------------------------
  function onTrain(r) {
    const ls = r.layers || [];
    const layers = ls.map((x) => x.layer);
    buildLayerCharts(layers, [
      ["loss", "Loss", ["loss", "ce"]],
      ["aux", "Aux (load-balance) loss per layer"],
      ["z", "Router z-loss per layer"],
      ["alpha", "α (aux coefficient) per layer"],
      ["drop", "Drop rate per layer"],
      ["vdrop", "Virtual drop rate per layer"],
      ["max_over_mean", "Max/mean expert load per layer"],
      ["entropy", "Router entropy per layer"],
      ["tokens_per_s", "Tokens/s", ["tokens/s"]],
      ["lr", "Learning rate", ["lr"]],
    ]);
    const x = r.step;
    push("loss", x, [r.loss, r.ce]);
    for (const [k, f] of [["aux", "aux"], ["z", "z"], ["alpha", "alpha"], ["drop", "dropRate"], ["vdrop", "virtualDropRate"], ["max_over_mean", "maxOverMeanLoad"], ["entropy", "entropy"]]) {
      push(k, x, ls.map((l) => l[f]));
    }
    push("tokens_per_s", x, [r.tokensPerSec]);
    push("lr", x, [r.lr]);
    setHeatmap(`Tokens per expert at step ${r.step} (colour: share of the layer's tokens)`, layers, ls.map((l) => (l.tokensPerExpert || []).slice()));
  }

  // ---- connection ----------------------------------------------------------------------
  // with `moe serve --api-key K`, open /dashboard?api_key=K: EventSource cannot send headers
  const apiKey = new URLSearchParams(location.search).get("api_key");
  const withKey = (u) => (apiKey ? `${u}${u.includes("?") ? "&" : "?"}api_key=${encodeURIComponent(apiKey)}` : u);
  async function detect() {
    const forced = new URLSearchParams(location.search).get("mode");
    if (forced === "serve" || forced === "train") return forced;
    try {
      const r = await fetch(withKey("/v1/moe/expert-load"));
      if (r.ok) return "serve";
      if (r.status === 401) return "auth";
    } catch { /* not a server */ }
    try { if ((await fetch("/v1/train/metrics", { method: "HEAD" })).ok) return "train"; } catch { /* not a run */ }
    return null;
  }
  function connect(url, handler) {
    const es = new EventSource(url);
    // training streams replay every record on (re)connect: start from a clean page
    es.onopen = () => { if (state.mode === "train") resetAll(); status("connected"); };
    es.addEventListener("reset", () => resetAll());
    es.onmessage = (ev) => {
      if (ev.data === "[DONE]") return;
      let msg;
      try { msg = JSON.parse(ev.data); } catch { status(`bad event: ${ev.data.slice(0, 80)}`, true); return; }
      try { handler(msg); } catch (err) { status(`cannot draw event: ${err.message}`, true); return; }
      state.events++;
      state.lastEventAt = Date.now();
      schedule();
    };
    es.onerror = () => status("disconnected; retrying…", true);
  }

  async function start() {
    $("heatmap").addEventListener("mousemove", tooltip);
    $("heatmap").addEventListener("mouseleave", () => { $("tooltip").hidden = true; });
    $("history-layer").addEventListener("change", schedule);
    window.addEventListener("resize", () => charts.forEach((c) => c.plot.setSize({ width: Math.max(320, c.box.clientWidth - 4), height: 170 })));
    const mode = await detect();
    state.mode = mode;
    if (mode === "serve") {
      $("mode").textContent = "serving";
      connect(withKey("/v1/moe/expert-load?stream=true"), onServe);
    } else if (mode === "train") {
      $("mode").textContent = "training";
      connect("/v1/train/metrics?stream=true", onTrain);
    } else if (mode === "auth") {
      $("mode").textContent = "serving";
      status("this server requires an API key for /v1/moe/expert-load, which a browser's EventSource cannot send; run moe serve without --api-key to use the dashboard", true);
    } else {
      $("mode").textContent = "";
      status("neither /v1/moe/expert-load nor /v1/train/metrics answers here", true);
    }
  }
  start();
})();
