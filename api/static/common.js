// runcast web UI: what every page shares (API calls, the key prompt, an SSE reader, DOM helpers).
"use strict";

const RC = (() => {
  const KEY_STORE = "runcast.apiKey"; // sessionStorage only: gone when the tab closes
  const base = location.pathname.replace(/\/ui(\/.*)?$/, "");
  const params = new URLSearchParams(location.search);

  class AuthError extends Error {}
  class HttpError extends Error {
    constructor(status, detail) {
      super(detail || `HTTP ${status}`);
      this.status = status;
    }
  }

  function key() {
    try { return sessionStorage.getItem(KEY_STORE); } catch { return null; }
  }
  function setKey(value) { sessionStorage.setItem(KEY_STORE, value); }
  function forgetKey() { sessionStorage.removeItem(KEY_STORE); }

  function url(path, query) {
    const u = new URL(base + path, location.origin);
    for (const [name, value] of Object.entries(query || {})) {
      if (value !== null && value !== undefined && value !== "") u.searchParams.set(name, value);
    }
    return u;
  }

  function authHeaders() {
    const k = key();
    return k ? { Authorization: "Bearer " + k } : {};
  }

  async function errorOf(res) {
    let detail = null;
    try { detail = (await res.json()).detail; } catch { /* not JSON */ }
    if (typeof detail !== "string") detail = detail ? JSON.stringify(detail) : null;
    return res.status === 401 ? new AuthError(detail || "unauthorized")
                              : new HttpError(res.status, detail);
  }

  // One API call: JSON in and out, the key as a bearer header (never in the URL).
  async function api(path, { method = "GET", query, body } = {}) {
    const headers = { Accept: "application/json", ...authHeaders() };
    if (body !== undefined) headers["Content-Type"] = "application/json";
    const res = await fetch(url(path, query), {
      method, headers, cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    if (!res.ok) throw await errorOf(res);
    return res.json();
  }

  // The key prompt: shown when the API answers 401; resolves once a key is entered.
  let prompt = null;
  function askKey(message) {
    if (prompt) return prompt.promise;
    const form = el("form", { class: "auth", "data-testid": "key-form", novalidate: "" },
      el("h2", {}, "API key needed"),
      el("p", { class: "auth-message", role: "alert" }, message),
      el("div", { class: "auth-row" },
        el("label", { for: "api-key" }, "API key"),
        // no `name`: even a native form submission could not put the key in a URL
        el("input", { id: "api-key", type: "password", autocomplete: "off", required: "",
                      spellcheck: "false", "data-testid": "key-input" }),
        el("button", { type: "submit", "aria-label": "Use this API key" }, "Use key")),
      el("p", { class: "hint" }, "Kept for this tab only (sessionStorage), sent as a bearer header."));
    let resolve;
    const promise = new Promise((r) => { resolve = r; });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const value = form.querySelector("input").value.trim();
      if (!value) return;
      setKey(value);
      form.remove();
      prompt = null;
      resolve();
    });
    document.querySelector("main").prepend(form);
    const line = document.getElementById("connection");
    if (line) line.textContent = "waiting for an API key";
    form.querySelector("input").focus();
    prompt = { promise };
    return promise;
  }

  // Runs fn until it gets past auth: a 401 asks for a key (again, if the one kept was refused).
  async function authed(fn, refusedWithoutKey = "This runcast needs an API key.") {
    for (;;) {
      try {
        return await fn();
      } catch (err) {
        if (!(err instanceof AuthError)) throw err;
        const had = key();
        if (had) forgetKey();
        await askKey(had ? "That key was refused: enter a valid API key." : refusedWithoutKey);
      }
    }
  }

  // Runs fn until it succeeds: auth as above; network errors and 5xx retried with a growing pause.
  async function load(fn, refusedWithoutKey) {
    let pause = 500;
    for (;;) {
      try {
        const value = await authed(fn, refusedWithoutKey);
        connection(true);
        return value;
      } catch (err) {
        if (err instanceof HttpError && err.status < 500) throw err;
        connection(false, err);
        await sleep(pause);
        pause = Math.min(pause * 2, 5000);
      }
    }
  }

  function connection(ok, err) {
    const line = document.getElementById("connection");
    if (!line) return;
    line.dataset.state = ok ? "ok" : "lost";
    line.textContent = ok ? "live · updated " + new Date().toLocaleTimeString()
                          : "connection lost, retrying… (" + (err && err.message || err) + ")";
  }

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  // Server-sent events over fetch (headers allowed, statuses visible): calls onFrame for each
  // frame until the body ends. Throws AuthError / HttpError on a refused request.
  async function readEvents(path, { query, lastId, onFrame, onOpen, signal }) {
    const headers = { Accept: "text/event-stream", ...authHeaders() };
    if (lastId) headers["Last-Event-ID"] = String(lastId);
    const res = await fetch(url(path, query), { headers, signal, cache: "no-store" });
    if (!res.ok) throw await errorOf(res);
    if (onOpen) onOpen();
    const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
    let buffer = "";
    for (;;) {
      const { value, done } = await reader.read();
      if (done) return;
      buffer += value;
      const cut = buffer.endsWith("\r") ? buffer.length - 1 : buffer.length; // keep a split \r\n
      buffer = buffer.slice(0, cut).replace(/\r\n?/g, "\n") + buffer.slice(cut);
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const frame = { id: null, event: "message", data: [] };
        for (const line of block.split("\n")) {
          if (!line || line.startsWith(":")) continue;
          const colon = line.indexOf(":");
          const field = colon < 0 ? line : line.slice(0, colon);
          const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
          if (field === "data") frame.data.push(text);
          else if (field === "id" || field === "event") frame[field] = text;
        }
        if (frame.data.length) onFrame({ ...frame, data: JSON.parse(frame.data.join("\n")) });
      }
    }
  }

  // el("a", {href: "/x", class: "y"}, "text", child): text always as text, never as HTML.
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== null && value !== undefined && value !== false) node.setAttribute(name, value);
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : String(child));
    }
    return node;
  }

  const STATUSES = ["queued", "running", "succeeded", "failed", "cancelled"];
  const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);

  function badge(status, attrs) {
    return el("span", { class: "badge status-" + status, ...attrs }, status);
  }

  function setStatus(node, status) {
    node.textContent = status;
    node.className = "badge status-" + status;
  }

  function time(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return isNaN(d) ? iso : d.toLocaleString();
  }

  function duration(start, end) {
    if (!start) return "";
    const ms = (end ? new Date(end) : new Date()) - new Date(start);
    if (!(ms >= 0)) return "";
    if (ms < 1000) return ms + " ms";
    if (ms < 60000) return (ms / 1000).toFixed(1) + " s";
    return Math.floor(ms / 60000) + " min " + Math.round((ms % 60000) / 1000) + " s";
  }

  function json(value) {
    return JSON.stringify(value, null, 2);
  }

  function uiLink(path) {
    return base + "/ui" + path;
  }

  return {
    base, params, AuthError, HttpError, key, forgetKey, api, authed, load, connection, sleep,
    readEvents, el, badge, setStatus, time, duration, json, uiLink, STATUSES, TERMINAL,
  };
})();
