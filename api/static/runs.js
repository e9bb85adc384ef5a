// /ui: the runs, newest first, refreshed every 2 s; filters by status and agent (kept in the URL).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const REFRESH_MS = 2000;
  const PAGE = 50;
  const MAX_LIMIT = 1000;
  let limit = PAGE;
  let timer = null;
  let generation = 0;  // a refresh started before a filter change is not shown

  function filters() {
    return { status: $("filter-status").value, agent: $("filter-agent").value };
  }

  function keepInUrl() {
    const u = new URL(location.href);
    for (const [name, value] of Object.entries(filters())) {
      if (value) u.searchParams.set(name, value); else u.searchParams.delete(name);
    }
    history.replaceState(null, "", u);
  }

  function cells(run) {
    const p = run.progress && typeof run.progress.progress === "number" ? run.progress.progress
      : (run.status === "succeeded" ? 1 : 0);
    const link = RC.el("a", { href: RC.uiLink("/runs/" + encodeURIComponent(run.run_id)),
                              class: "id", title: run.run_id }, run.run_id.slice(0, 12));
    return [
      RC.el("td", { class: "run" }, link),
      RC.el("td", {}, run.agent),
      RC.el("td", {}, RC.badge(run.status)),
      RC.el("td", { class: "wide" }, RC.el("progress", { value: p, max: 1,
        "aria-label": "Progress of run " + run.run_id }), " ",
        RC.el("span", { class: "muted" }, Math.round(p * 100) + "%")),
      RC.el("td", { class: "wide" }, RC.el("time", { datetime: run.created_at },
        RC.time(run.created_at))),
      RC.el("td", { class: "wide" }, RC.duration(run.started_at, run.finished_at)),
      RC.el("td", { class: "wide" }, run.batch_id
        ? RC.el("a", { href: RC.uiLink("/batches/" + encodeURIComponent(run.batch_id)),
                       class: "id", title: run.batch_id }, run.batch_id.slice(0, 8)) : ""),
    ];
  }

  function render(page) {
    const body = $("runs-body");
    const rows = page.runs.map((run) => {
      const row = RC.el("tr", { "data-run-id": run.run_id, "data-status": run.status,
                                class: "row-" + run.status });
      row.append(...cells(run));
      return row;
    });
    body.replaceChildren(...rows);
    $("runs-empty").hidden = rows.length > 0;
    $("runs-more").hidden = !page.next_cursor || limit >= MAX_LIMIT;
    const counts = {};
    for (const run of page.runs) counts[run.status] = (counts[run.status] || 0) + 1;
    $("runs-summary").textContent = page.runs.length + " shown" + (page.runs.length
      ? " · " + Object.entries(counts).map(([s, n]) => `${n} ${s}`).join(", ") : "");
  }

  async function refresh() {
    clearTimeout(timer);
    const mine = ++generation;
    try {
      if (!document.hidden) {
        const page = await RC.load(() => RC.api("/runs", { query: { ...filters(), limit } }));
        if (mine === generation) render(page);
      }
    } catch (err) {
      $("runs-summary").textContent = "Could not list runs: " + err.message;
    }
    if (mine === generation) timer = setTimeout(refresh, REFRESH_MS);
  }

  async function loadAgents() {
    const wanted = RC.params.get("agent") || "";
    const select = $("filter-agent");
    let names = [];
    try {
      names = (await RC.load(() => RC.api("/agents"))).agents.map((a) => a.name);
    } catch { /* the filter still works with the agent from the URL */ }
    if (wanted && !names.includes(wanted)) names.push(wanted);
    for (const name of names.sort()) select.append(RC.el("option", { value: name }, name));
    select.value = wanted;
  }

  async function start() {
    const status = RC.params.get("status") || "";
    $("filter-status").value = RC.STATUSES.includes(status) ? status : "";
    await loadAgents();
    for (const id of ["filter-status", "filter-agent"]) {
      $(id).addEventListener("change", () => { limit = PAGE; keepInUrl(); refresh(); });
    }
    $("filters").addEventListener("submit", (event) => event.preventDefault());
    $("runs-more").addEventListener("click", () => {
      limit = Math.min(limit * 2, MAX_LIMIT);
      refresh();
    });
    document.addEventListener("visibilitychange", () => { if (!document.hidden) refresh(); });
    refresh();
  }

  start();
})();
