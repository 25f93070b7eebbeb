// dspex dashboard page: follows one session over server-sent events (no reload); the list of
// sessions is re-read every few seconds.
// Events: "variable" (a record after a change), "history" (kept versions of a variable),
// "deps" (dependency edges), "status" (the store is unreachable / back), "failure" (the watch
// ended with an error), "end", and "restart" (this page read too slowly: follow again afresh).
"use strict";
(() => {
  const KEY = document.querySelector('meta[name="dspex-key"]').content;
  const READ_ONLY = document.querySelector('meta[name="dspex-read-only"]').content === "true";
  const VERSIONED = new Set(["initial", "register", "set", "rollback"]);
  const NUMERIC = new Set(["float", "integer"]);
  const $ = (id) => document.getElementById(id);
  let source = null;
  let state = null;
  const dirtyPlots = new Set();
  let frameQueued = false;

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "text") node.textContent = v;
      else node.setAttribute(k, v);
    }
    node.append(...children);
    return node;
  }

  function svg(tag, attrs = {}) {
    const node = document.createElementNS("http://www.w3.org/2000/svg", tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    return node;
  }

  function setStatus(text, kind) {
    const status = $("status");
    status.textContent = text;
    status.className = "status " + (kind || "");
  }

  function showError(message) {
    const banner = $("banner");
    banner.textContent = message;
    banner.hidden = !message;
  }

  // -- sessions ------------------------------------------------------------------------------

  async function loadSessions() {
    const response = await fetch("api/sessions");
    const body = await response.json();
    if (!response.ok) { showError(body.error); setStatus("no store", "down"); return; }
    const wanted = new URLSearchParams(location.search).get("session") || (state && state.sessionId);
    const ids = body.map((info) => info.session_id);
    if (wanted && !ids.includes(wanted)) body.unshift({ session_id: wanted });
    const labels = body.map((info) => info.variable_count === undefined ? info.session_id
      : `${info.session_id} (${info.variable_count} variables)`);
    if (labels.join("\n") !== shownSessions) {  // rebuilt only on change: an open list stays open
      shownSessions = labels.join("\n");
      $("session").replaceChildren(...body.map((info, i) => el("option", {
        value: info.session_id, text: labels[i],
      })));
    }
    const chosen = wanted || (body[0] && body[0].session_id);
    if (!chosen) { setStatus("no sessions", ""); return; }
    $("session").value = chosen;
    if (!state || state.sessionId !== chosen) follow(chosen);
  }

  // The store has no feed of sessions opening and closing, so the list is re-read every few
  // seconds while the page is visible (the followed session itself is live over its stream).
  const SESSION_REFRESH_MS = 3000;
  let shownSessions = null;
  function refreshSessionsWhileVisible() {
    setInterval(() => {
      if (!document.hidden) loadSessions().catch(() => {});
    }, SESSION_REFRESH_MS);
  }

  // Every (re)connection starts with the current records, so the page starts afresh too.
  function reset(sessionId) {
    state = {
      sessionId, records: new Map(), points: new Map(), writable: new Map(),
      rows: new Map(), plots: new Map(), optimizers: new Map(), edges: [],
    };
    $("variables").tBodies[0].replaceChildren();
    $("plots").replaceChildren();
    $("optimizers").replaceChildren();
    renderGraph();
  }

  function follow(sessionId) {
    if (source) source.close();
    showError("");
    reset(sessionId);
    history.replaceState(null, "", "?session=" + encodeURIComponent(sessionId));
    const url = "api/sessions/" + encodeURIComponent(sessionId) + "/events";
    source = new EventSource(url);
    setStatus("connecting…", "");
    source.addEventListener("open", () => { reset(sessionId); setStatus("live", "live"); });
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) explainRefusal(url);
      else setStatus("reconnecting…", "down");
    });
    source.addEventListener("variable", (e) => onVariable(JSON.parse(e.data)));
    source.addEventListener("history", (e) => onHistory(JSON.parse(e.data)));
    source.addEventListener("deps", (e) => { state.edges = JSON.parse(e.data).edges; renderGraph(); });
    source.addEventListener("failure", (e) => showError(JSON.parse(e.data).message));
    source.addEventListener("status", (e) => {  // the store went away for a while, or is back
      const status = JSON.parse(e.data);
      showError(status.message || "");
      setStatus(status.state === "live" ? "live" : "reconnecting…", status.state === "live" ? "live" : "down");
    });
    source.addEventListener("restart", () => follow(sessionId));  // fell behind: start afresh
    source.addEventListener("end", () => {  // the session closed, or the dashboard stopped
      source.close();
      setStatus("ended", "down");
      loadSessions().catch(() => {});
    });
  }

  async function explainRefusal(url) {
    setStatus("refused", "down");
    const abort = new AbortController();
    const response = await fetch(url, { signal: abort.signal });
    if (!response.ok) showError((await response.json()).error);
    abort.abort();
  }

  // -- updates -------------------------------------------------------------------------------

  function onVariable(message) {
    const record = message.record;
    const name = record.name;
    if (message.kind === "delete") { forget(name); return; }
    state.records.set(name, record);
    if ("writable" in message) state.writable.set(name, message.writable);
    if (VERSIONED.has(message.kind)) addPoints(name, [record]);
    if (record.lock && record.lock.progress) addProgress(record);
    renderRow(record, message.kind !== "initial");
    renderEmpty();
    markGraphStale();
  }

  function onHistory(message) {
    addPoints(message.name, message.records);
    const record = state.records.get(message.name);
    if (record) renderRow(record, false);
  }

  function forget(name) {
    for (const map of [state.records, state.points, state.writable]) map.delete(name);
    for (const map of [state.rows, state.plots]) {
      const node = map.get(name);
      if (node) { (node.closest(".card") || node).remove(); map.delete(name); }
    }
    renderEmpty();
  }

  function addPoints(name, records) {
    if (!state.points.has(name)) state.points.set(name, new Map());
    const points = state.points.get(name);
    for (const r of records) points.set(r.version, r);
    schedulePlot(name);
  }

  function addProgress(record) {
    const lock = record.lock;
    const id = lock.optimizer_id;
    if (!state.optimizers.has(id)) state.optimizers.set(id, { points: new Map(), names: new Set(), last: {} });
    const optimizer = state.optimizers.get(id);
    const progress = lock.progress;
    optimizer.names.add(record.name);
    optimizer.last = progress;
    const iteration = progress.iteration ?? progress.step ?? progress.trial;
    if (iteration !== undefined) optimizer.points.set(iteration, progress);
    schedulePlot("optimizer:" + id);
  }

  // -- table ---------------------------------------------------------------------------------

  function renderRow(record, flash) {
    let row = state.rows.get(record.name);
    if (!row) {
      row = el("tr", { "data-name": record.name });
      state.rows.set(record.name, row);
      const rows = [...state.rows.keys()].sort();
      const after = rows.indexOf(record.name) + 1 < rows.length ? state.rows.get(rows[rows.indexOf(record.name) + 1]) : null;
      $("variables").tBodies[0].insertBefore(row, after && after.isConnected ? after : null);
    }
    const lock = record.lock;
    row.replaceChildren(
      el("td", { class: "name", text: record.name }),
      el("td", { class: "type", text: record.type }),
      el("td", { class: "value", title: record.text, text: record.text }),
      el("td", { class: "version", text: String(record.version) }),
      el("td", { class: "writer", text: record.writer }),
      el("td", { class: "lock" }, lock ? el("span", { class: "badge lock", text: lockText(lock) }) : ""),
      el("td", { class: "stale" }, record.stale ? el("span", { class: "badge stale", text: "stale" }) : ""),
      el("td", { class: "rollback" }, rollbackControl(record)),
    );
    if (flash) { row.classList.remove("flash"); void row.offsetWidth; row.classList.add("flash"); }
  }

  function lockText(lock) {
    const left = Math.max(0, Math.round(lock.expires_at - Date.now() / 1000));
    return `${lock.optimizer_id} (lease ${left}s)`;
  }

  function rollbackControl(record) {
    if (READ_ONLY || !state.writable.get(record.name)) return "";
    const versions = [...(state.points.get(record.name) || new Map()).keys()]
      .filter((v) => v !== record.version).sort((a, b) => b - a);
    if (!versions.length) return "";
    const choice = el("select", { "aria-label": "version" },
      ...versions.map((v) => el("option", { value: String(v), text: "v" + v })));
    const button = el("button", { type: "button", text: "roll back" });
    button.addEventListener("click", () => rollback(record.name, Number(choice.value)));
    return el("span", {}, choice, " ", button);
  }

  async function rollback(name, version) {
    const url = `api/sessions/${encodeURIComponent(state.sessionId)}/variables/${encodeURIComponent(name)}/rollback`;
    const response = await fetch(url, {
      method: "POST",
      headers: { "Content-Type": "application/json", "X-Dspex-Dashboard": KEY },
      body: JSON.stringify({ version }),
    });
    showError(response.ok ? "" : (await response.json()).error);
  }

  function renderEmpty() {
    $("no-variables").hidden = state.records.size > 0;
    $("no-optimizers").hidden = state.optimizers.size > 0;
    $("no-edges").hidden = state.edges.length > 0;
  }

  // -- plots ---------------------------------------------------------------------------------

  function schedulePlot(key) {
    dirtyPlots.add(key);
    if (frameQueued) return;
    frameQueued = true;
    requestAnimationFrame(() => {
      frameQueued = false;
      const keys = [...dirtyPlots];
      dirtyPlots.clear();
      for (const k of keys) {
        if (k.startsWith("optimizer:")) renderOptimizer(k.slice("optimizer:".length));
        else if (state.points.has(k)) renderHistory(k);
      }
      renderEmpty();
    });
  }

  function plotNode(key, title, container, attribute) {
    let node = state.plots.get(key);
    if (!node) {
      node = el("div", { class: "plot", [attribute]: key.replace(/^optimizer:/, "") });
      const card = el("div", { class: "card" }, el("h3", { text: title }), node);
      if (attribute === "data-optimizer") card.append(el("div", { class: "best" }));
      container.append(card);
      state.plots.set(key, node);
    }
    return node;
  }

  function xOf(record) {
    return $("xaxis").value === "time" ? new Date(record.updated_at * 1000) : record.version;
  }

  function renderHistory(name) {
    const records = [...state.points.get(name).values()].sort((a, b) => a.version - b.version);
    if (!records.length) return;
    const numeric = NUMERIC.has(records[0].type);
    const node = plotNode(name, name, $("plots"), "data-plot");
    const trace = {
      x: records.map(xOf),
      // plotly reads labels and hovers as HTML: values and writers are escaped as text
      y: records.map((r) => (numeric ? r.number : escapeHtml(r.label))),
      text: records.map((r) => `v${r.version} by ${escapeHtml(r.writer)}<br>${escapeHtml(r.text)}`),
      hoverinfo: "text",
      mode: "lines+markers",
      line: { shape: numeric ? "linear" : "hv" },
      name,
    };
    const layout = {
      margin: { l: numeric ? 50 : 140, r: 10, t: 10, b: 40 },
      xaxis: $("xaxis").value === "time" ? { title: { text: "time" }, type: "date" }
        : { title: { text: "version" }, type: "linear", ...wholeTicks(records.length) },
      yaxis: { type: numeric ? "linear" : "category", automargin: true },
      showlegend: false,
    };
    Plotly.react(node, [trace], layout, { displaylogo: false, responsive: true });
  }

  function renderOptimizer(id) {
    const optimizer = state.optimizers.get(id);
    const node = plotNode("optimizer:" + id, "optimizer " + id, $("optimizers"), "data-optimizer");
    const points = [...optimizer.points.entries()].sort((a, b) => a[0] - b[0]);
    const traces = [];
    for (const field of ["score", "best_score"]) {
      const kept = points.filter(([, p]) => typeof p[field] === "number");
      if (kept.length) {
        traces.push({
          x: kept.map(([i]) => i), y: kept.map(([, p]) => p[field]), name: field,
          mode: field === "score" ? "markers" : "lines+markers",
          line: { shape: "hv" },
        });
      }
    }
    Plotly.react(node, traces, {
      margin: { l: 50, r: 10, t: 10, b: 40 },
      xaxis: { title: { text: "iteration" }, ...wholeTicks(points.length) },
      yaxis: { title: { text: "score" } },
      legend: { orientation: "h" },
    }, { displaylogo: false, responsive: true });
    const last = optimizer.last;
    const parts = [];
    if (last.best_score !== undefined) parts.push("best score " + last.best_score);
    if (last.best_value !== undefined) parts.push("best value " + JSON.stringify(last.best_value));
    parts.push("iteration " + (last.iteration ?? "?"));
    parts.push("on " + [...optimizer.names].sort().join(", "));
    node.parentElement.querySelector(".best").textContent = parts.join(" · ");
  }

  // Versions and iterations are whole numbers: no 1.5 ticks while there are few points.
  function wholeTicks(count) {
    return count <= 12 ? { dtick: 1, tickformat: "d" } : { tickformat: "d" };
  }

  function escapeHtml(text) {
    return text.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
  }

  // -- dependency graph ----------------------------------------------------------------------

  function markGraphStale() {
    if (state.edges.length) renderGraph();
  }

  function renderGraph() {
    const edges = state.edges;
    const graph = $("graph");
    graph.replaceChildren();
    renderEmpty();
    if (!edges.length) return;
    const depth = new Map();
    const nodes = [...new Set(edges.flat())].sort();
    for (const n of nodes) depth.set(n, 0);
    for (let i = 0; i < nodes.length; i++) {  // longest path layering (the graph is a DAG)
      for (const [up, down] of edges) depth.set(down, Math.max(depth.get(down), depth.get(up) + 1));
    }
    const rowInLayer = new Map();
    const position = new Map();
    for (const n of nodes) {
      const layer = depth.get(n);
      const row = rowInLayer.get(layer) || 0;
      rowInLayer.set(layer, row + 1);
      position.set(n, { x: 20 + layer * 190, y: 20 + row * 50 });
    }
    const width = 40 + (Math.max(...depth.values()) + 1) * 190;
    const height = 40 + Math.max(...rowInLayer.values()) * 50;
    const root = svg("svg", { viewBox: `0 0 ${width} ${height}`, height: String(height) });
    const defs = svg("defs");
    const marker = svg("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "10", refY: "5", markerWidth: "8", markerHeight: "8", orient: "auto" });
    marker.append(svg("path", { d: "M0,0 L10,5 L0,10 z", fill: "#64748b" }));
    defs.append(marker);
    root.append(defs);
    for (const [up, down] of edges) {
      const a = position.get(up), b = position.get(down);
      root.append(svg("line", { x1: a.x + 150, y1: a.y + 15, x2: b.x, y2: b.y + 15, "marker-end": "url(#arrow)" }));
    }
    for (const n of nodes) {
      const p = position.get(n);
      const record = state.records.get(n);
      const group = svg("g", { class: record && record.stale ? "stale" : "", "data-node": n });
      group.append(svg("rect", { x: p.x, y: p.y, width: 150, height: 30 }));
      const label = svg("text", { x: p.x + 75, y: p.y + 15 });
      label.textContent = n.length > 20 ? n.slice(0, 19) + "…" : n;
      group.append(label);
      root.append(group);
    }
    graph.append(root);
  }

  // -- start ---------------------------------------------------------------------------------

  $("session").addEventListener("change", (e) => follow(e.target.value));
  $("refresh-sessions").addEventListener("click", () => loadSessions());
  $("xaxis").addEventListener("change", () => { for (const name of state.points.keys()) schedulePlot(name); });
  loadSessions().catch((err) => showError(String(err)));
  refreshSessionsWhileVisible();
})();
