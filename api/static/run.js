// /ui/runs/{id}: one run, live. Events are shown in seq order, each exactly once: a frame at or
// below the last shown seq is dropped, and a gap (an event type EventSource has no listener
// for, a lost frame) is filled from GET /runs/{id}/events before anything after it is shown.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const runId = decodeURIComponent(location.pathname.split("/").filter(Boolean).pop());
  const urlToken = RC.params.get("token");
  const KNOWN_TYPES = ["started", "progress", "update", "token", "step", "checkpoint",
    "heartbeat", "complete", "error", "cancelled", "custom:langgraph", "custom:interrupt",
    "custom:analysis_started", "custom:analysis_complete"];
  const IDLE_CHECK_MS = 3000;

  let lastSeq = 0;            // the highest seq shown; every seq up to it is shown once
  const pending = new Map();  // seq -> envelope, received but not yet shown (waits for a gap)
  let filling = false;
  let terminal = false;
  let streamToken = urlToken;
  let source = null;
  let lastFrameAt = Date.now();
  let reconnectPause = 250;
  let status = null;

  const tokens = $("run-tokens");
  const log = $("run-events");

  function query(extra) {
    return { ...(streamToken ? { token: streamToken } : {}), ...extra };
  }

  function setStatus(value) {
    status = value;
    RC.setStatus($("run-status"), value);
    document.title = `${value} · run ${runId.slice(0, 8)} · runcast`;
    const button = $("cancel-button");  // absent on a read-only page
    if (button) button.disabled = RC.TERMINAL.has(value);
  }

  function setProgress(value) {
    const p = Math.max(0, Math.min(1, Number(value) || 0));
    const bar = $("run-progress");
    bar.value = p;
    bar.setAttribute("value", String(p));
    $("progress-label").textContent = Math.round(p * 100) + "%";
  }

  function setUpdate(text) {
    $("run-update").textContent = text || "";
  }

  function notice(text) {
    $("run-notice").textContent = text || "";
    $("run-notice").hidden = !text;
  }

  function showOutput(output) {
    const node = $("run-output");
    node.textContent = RC.json(output);
    node.hidden = false;
    $("outcome-pending").hidden = true;
  }

  function showError(error) {
    const node = $("run-error");
    node.replaceChildren(
      RC.el("strong", {}, error.code || "error"), ": ", error.error || "",
      error.details && Object.keys(error.details).length
        ? RC.el("pre", { class: "details" }, RC.json(error.details)) : null);
    node.hidden = false;
    $("outcome-pending").hidden = true;
  }

  function showCancelled(reason) {
    $("outcome-pending").textContent = "Cancelled" + (reason ? ": " + reason : ".");
    $("outcome-pending").hidden = false;
  }

  function showMeta(run) {
    $("run-agent").textContent = run.agent;
    const rows = [["created", RC.time(run.created_at)], ["started", RC.time(run.started_at)],
      ["finished", RC.time(run.finished_at)], ["attempt", run.attempt || ""],
      ["input", JSON.stringify(run.input)]];
    const meta = $("run-meta");
    meta.replaceChildren();
    for (const [name, value] of rows) {
      if (value === "" || value === undefined) continue;
      meta.append(RC.el("div", {}, RC.el("dt", {}, name), RC.el("dd", {}, value)));
    }
    if (run.batch_id) {
      meta.append(RC.el("div", {}, RC.el("dt", {}, "batch"), RC.el("dd", {},
        RC.el("a", { href: RC.uiLink("/batches/" + encodeURIComponent(run.batch_id)) },
          run.batch_id))));
    }
  }

  function showRun(run) {
    showMeta(run);
    if (status === null || !RC.TERMINAL.has(status)) setStatus(run.status);
    if (run.progress && typeof run.progress.progress === "number") setProgress(run.progress.progress);
    if (run.cancel_requested && !RC.TERMINAL.has(run.status)) notice("Cancellation requested…");
    if (run.status === "succeeded") showOutput(run.output);  // also when the log has expired
    if (run.status === "failed" && run.error) showError(run.error);
  }

  function summary(event) {
    const text = JSON.stringify(event.data);
    return text.length > 240 ? text.slice(0, 240) + "…" : text;
  }

  // DOM writes are batched (one append and one scroll per flush): a replay of thousands of
  // events must not lay the page out once per event.
  let logBuffer = [];
  let tokenBuffer = "";
  let flushTimer = null;
  const FLUSH_MS = 30;

  function flush() {
    clearTimeout(flushTimer);
    flushTimer = null;
    if (tokenBuffer) {
      tokens.append(tokenBuffer);
      tokenBuffer = "";
    }
    if (logBuffer.length) {
      const atBottom = log.scrollTop + log.clientHeight >= log.scrollHeight - 8;
      log.append(...logBuffer);
      logBuffer = [];
      if (atBottom) log.scrollTop = log.scrollHeight;
      $("events-count").textContent = "(" + log.childElementCount + ")";
    }
  }

  function later() {
    if (flushTimer === null) flushTimer = setTimeout(flush, FLUSH_MS);
  }

  function logEvent(event) {
    const when = new Date(event.ts);
    logBuffer.push(RC.el("li", { "data-seq": event.seq, "data-type": event.type,
                                 class: "event type-" + event.type.replace(/[^a-z]/g, "") },
      RC.el("span", { class: "seq" }, "#" + event.seq),
      RC.el("span", { class: "type" }, event.type),
      RC.el("time", { datetime: event.ts }, isNaN(when) ? "" : when.toLocaleTimeString()),
      RC.el("code", { class: "data" }, summary(event))));
    later();
  }

  function show(event) {
    const data = event.data || {};
    logEvent(event);
    switch (event.type) {
      case "started": setStatus("running"); break;
      case "progress":
        setProgress(data.progress);
        $("progress-message").textContent = [data.step, data.message].filter(Boolean).join(" · ");
        break;
      case "update": setUpdate(data.text); break;
      case "token": setUpdate(""); tokenBuffer += data.content || ""; later(); break;
      case "step": setUpdate(""); break;
      case "complete":
        setUpdate(""); setProgress(1); showOutput(data.output); setStatus("succeeded"); break;
      case "error": setUpdate(""); showError(data); setStatus("failed"); break;
      case "cancelled": setUpdate(""); showCancelled(data.reason); setStatus("cancelled"); break;
      default:
        if (event.type.startsWith("custom:")) {
          setUpdate("");
          $("custom-none").hidden = true;
          $("run-custom").append(RC.el("li", { "data-seq": event.seq },
            RC.el("span", { class: "type" }, event.type.slice(7)),
            RC.el("pre", {}, RC.json(data))));
        }
    }
    if (["complete", "error", "cancelled"].includes(event.type)) finish();
  }

  function receive(event) {
    lastFrameAt = Date.now();
    if (event.seq <= lastSeq || pending.has(event.seq)) return;
    pending.set(event.seq, event);
    drain();
  }

  function drain() {
    while (pending.has(lastSeq + 1)) {
      const event = pending.get(lastSeq + 1);
      pending.delete(lastSeq + 1);
      lastSeq = event.seq;
      if (!terminal) show(event);
    }
    if (pending.size && !terminal) fill();
  }

  // Reads what the stream did not deliver (or could not: unknown custom:NAME types).
  async function fill() {
    if (filling || terminal) return;
    filling = true;
    try {
      const page = await RC.load(() => RC.api(`/runs/${encodeURIComponent(runId)}/events`,
        { query: query({ after: lastSeq, limit: 1000 }) }));
      for (const event of page.events) {
        if (event.seq > lastSeq) pending.set(event.seq, event);
      }
    } catch (err) {
      notice("Could not read the event log: " + err.message);
    } finally {
      filling = false;
    }
    drain();
  }

  function connect() {
    if (terminal) return;
    const u = new URL(RC.base + `/runs/${encodeURIComponent(runId)}/stream`, location.origin);
    for (const [name, value] of Object.entries(query({ after: lastSeq }))) {
      u.searchParams.set(name, value);
    }
    const es = new EventSource(u);
    source = es;
    const onFrame = (message) => {
      // "error" is also the name of EventSource's own connection-error event (no data)
      if (!(message instanceof MessageEvent) || typeof message.data !== "string") return;
      reconnectPause = 250;
      RC.connection(true);
      receive(JSON.parse(message.data));
    };
    for (const type of KNOWN_TYPES) es.addEventListener(type, onFrame);
    es.onopen = () => { RC.connection(true); };
    es.onerror = () => {
      if (terminal || source !== es) return;
      RC.connection(false, "stream interrupted");
      if (es.readyState === EventSource.CLOSED) {  // the browser gave up: start afresh
        es.close();
        setTimeout(connect, reconnectPause);
        reconnectPause = Math.min(reconnectPause * 2, 5000);
      }
      // else the browser reconnects by itself, with Last-Event-ID
    };
  }

  function finish() {
    flush();
    terminal = true;
    pending.clear();
    if (source) source.close();
    source = null;
    RC.connection(true);
    RC.api(`/runs/${encodeURIComponent(runId)}`, { query: query() }).then(showMeta, () => {});
  }

  async function cancel() {
    const button = $("cancel-button");
    button.disabled = true;
    try {
      await RC.authed(() => RC.api(`/runs/${encodeURIComponent(runId)}/cancel`,
        { method: "POST", body: { reason: "cancelled from the web UI" } }));
      notice("Cancellation requested…");
    } catch (err) {
      notice(err.status === 409 ? "The run had already ended." : "Cancel failed: " + err.message);
      button.disabled = RC.TERMINAL.has(status);
    }
  }

  async function start() {
    $("run-id").textContent = runId;
    const readOnly = Boolean(urlToken) && !RC.key();
    if (readOnly) {
      $("cancel-button").remove();
      $("run-readonly").hidden = false;
    } else {
      $("cancel-button").addEventListener("click", cancel);
    }
    let run;
    try {
      run = await RC.load(() => RC.api(`/runs/${encodeURIComponent(runId)}`, { query: query() }),
        urlToken ? "This link's token was refused: enter an API key." : undefined);
    } catch (err) {
      notice(err.status === 404 ? `No run ${runId} (it may have expired).` : err.message);
      RC.setStatus($("run-status"), "unknown");
      return;
    }
    if (run.stream_token) streamToken = run.stream_token;
    showRun(run);
    connect();
    setInterval(() => {  // a quiet stream may be hiding events it has no listener for
      if (!terminal && !filling && Date.now() - lastFrameAt > IDLE_CHECK_MS) {
        lastFrameAt = Date.now();
        fill();
      }
    }, IDLE_CHECK_MS);
  }

  start();
})();
