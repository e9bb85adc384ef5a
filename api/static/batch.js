// /ui/batches/{id}: counts, a progress bar and the batch's runs. Live from the batch stream
// (GET /batches/{id}/stream, resumed with Last-Event-ID); while that stream is unavailable
// (a server without it, a dropped connection) GET /batches/{id} is polled every 2 s instead.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const batchId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
  const path = "/batches/" + encodeURIComponent(batchId);
  const RUNS_SHOWN = 500;
  const POLL_MS = 2000;
  const STREAM_RETRY_MS = 10000;
  const ENDED = (status) => status !== "queued" && status !== "running";

  let done = false;
  let lastId = 0;
  let pollTimer = null;
  let countsTimer = null;
  const stop = new AbortController();
  const rows = new Map();  // run_id -> <tr>

  function notice(text) {
    $("batch-notice").textContent = text || "";
    $("batch-notice").hidden = !text;
  }

  function showCounts(counts, total, isDone) {
    const names = [...RC.STATUSES, ...Object.keys(counts).filter((s) => !RC.STATUSES.includes(s))];
    const ended = Object.entries(counts).reduce((n, [s, c]) => n + (ENDED(s) ? c : 0), 0);
    const value = total ? Math.min(1, ended / total) : 0;
    const bar = $("batch-progress");
    bar.value = value;
    bar.setAttribute("value", String(value));
    $("batch-progress-label").textContent = `${ended} / ${total} ended`;
    const list = $("batch-counts");
    list.setAttribute("data-total", total);
    list.replaceChildren(...names.map((s) => RC.el("li", { "data-status": s,
      "data-count": counts[s] || 0 }, RC.badge(s), " ", RC.el("span", { class: "count" },
      String(counts[s] || 0)))));
    const state = $("batch-state");
    state.textContent = isDone ? "done" : "in progress";
    state.className = "badge " + (isDone ? "status-succeeded" : "status-running");
    document.title = `${isDone ? "done" : ended + "/" + total} · batch ${batchId.slice(0, 8)} · runcast`;
    if (isDone) finish();
  }

  function setRow(run) {
    let row = rows.get(run.run_id);
    if (!row) {
      if (rows.size >= RUNS_SHOWN) return;
      row = RC.el("tr", { "data-run-id": run.run_id });
      rows.set(run.run_id, row);
      $("batch-runs-body").append(row);
    }
    row.setAttribute("data-status", run.status);
    row.className = "row-" + run.status;
    row.replaceChildren(
      RC.el("td", { class: "run" }, RC.el("a", { class: "id", title: run.run_id,
        href: RC.uiLink("/runs/" + encodeURIComponent(run.run_id)) }, run.run_id.slice(0, 12))),
      RC.el("td", {}, run.agent || row.dataset.agent || ""),
      RC.el("td", {}, RC.badge(run.status)),
      RC.el("td", { class: "wide" }, RC.duration(run.started_at, run.finished_at)));
    if (run.agent) row.dataset.agent = run.agent;
  }

  async function refreshStatus() {
    const status = await RC.load(() => RC.api(path));
    showCounts(status.counts, status.total, status.done);
    return status;
  }

  async function refreshRuns() {
    const page = await RC.load(() => RC.api("/runs", { query: { batch_id: batchId,
                                                                limit: RUNS_SHOWN } }));
    for (const run of page.runs) setRow(run);
    $("batch-runs-note").textContent = page.next_cursor ? `(the newest ${RUNS_SHOWN})` : "";
  }

  function countsSoon() {  // many frames, one status read
    if (countsTimer || done) return;
    countsTimer = setTimeout(() => { countsTimer = null; if (!done) refreshStatus(); }, 300);
  }

  function startPolling(why) {
    if (pollTimer || done) return;
    $("batch-mode").textContent = "polling every 2 s (" + why + ")";
    $("batch-mode").dataset.mode = "polling";
    const tick = async () => {
      try { await refreshStatus(); if (!done) await refreshRuns(); } catch (err) { notice(err.message); }
      if (pollTimer) pollTimer = setTimeout(tick, POLL_MS);
    };
    pollTimer = setTimeout(tick, POLL_MS);
  }

  function stopPolling() {
    clearTimeout(pollTimer);
    pollTimer = null;
  }

  function onFrame(frame) {
    if (frame.id) lastId = Number(frame.id);
    if (frame.event === "run") {
      const row = rows.get(frame.data.run_id);
      setRow({ run_id: frame.data.run_id, status: frame.data.status,
               agent: row ? row.dataset.agent : "" });
      countsSoon();
    } else if (frame.event === "done") {
      showCounts(frame.data.counts, frame.data.total, true);
    }
  }

  async function follow() {
    let pause = 500;
    while (!done) {
      try {
        await RC.authed(() => RC.readEvents(path + "/stream", { lastId, onFrame,
          signal: stop.signal, onOpen: () => {
            stopPolling();
            pause = 500;
            $("batch-mode").textContent = "live";
            $("batch-mode").dataset.mode = "stream";
            RC.connection(true);
          } }));
        if (!done) await RC.sleep(pause);  // the server closed the stream early: resume
      } catch (err) {
        if (done) return;
        const missing = err instanceof RC.HttpError && (err.status === 404 || err.status === 405);
        startPolling(missing ? "no batch stream on this server" : "stream interrupted");
        if (!missing) RC.connection(false, err);
        await RC.sleep(missing ? STREAM_RETRY_MS : pause);
        pause = Math.min(pause * 2, 5000);
      }
    }
  }

  function finish() {
    if (done) return;
    done = true;
    stopPolling();
    stop.abort();
    refreshRuns().catch(() => {});  // final durations
  }

  async function start() {
    $("batch-id").textContent = batchId;
    try {
      await refreshStatus();
    } catch (err) {
      notice(err.status === 404 ? `No batch ${batchId} (it may have expired).` : err.message);
      return;
    }
    await refreshRuns().catch((err) => notice(err.message));
    if (!done) follow();
  }

  start();
})();
