/* Microplate touchscreen: shared helpers (API calls, errors, event socket, keypad, PIN).
 * Plain JavaScript, no build step, no network beyond the appliance itself. */
"use strict";

const MP = (() => {
  const boot = JSON.parse(document.getElementById("boot").textContent);
  const strings = boot.strings;

  /* Words in the kiosk's language; "{name}" placeholders are filled from vars. */
  function t(key, vars) {
    let text = Object.prototype.hasOwnProperty.call(strings, key) ? strings[key] : key;
    if (vars) {
      for (const [name, value] of Object.entries(vars)) text = text.split(`{${name}}`).join(String(value));
    }
    return text;
  }

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (name === "class") node.className = value;
      else if (name === "text") node.textContent = value;
      else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
      else node.setAttribute(name, value === true ? "" : String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  class ApiError extends Error {
    constructor(status, code, message, fields) {
      super(message);
      this.status = status;
      this.code = code;
      this.fields = fields || [];
    }
  }

  /* The operator's wording for an error: ours for known codes (translated), else the
   * appliance's own message (written for operators too), never a stack trace. */
  function describe(err) {
    if (!(err instanceof ApiError)) return t("error.network");
    const key = `error.${err.code}`;
    const ours = Object.prototype.hasOwnProperty.call(strings, key) ? strings[key] : null;
    if (boot.lang === "en") return err.message || ours || t("error.internal_error");
    // Translated text first; the appliance's English detail helps whoever calls support.
    return ours ? (err.message && ours !== err.message ? `${ours} (${err.message})` : ours)
                : (err.message || t("error.internal_error"));
  }

  async function request(method, path, body) {
    const init = { method, credentials: "same-origin", headers: { Accept: "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    let res;
    try {
      res = await fetch(path, init);
    } catch (_) {
      throw new ApiError(0, "network", t("error.network"));
    }
    if (res.status === 204) return null;
    let data = null;
    const type = res.headers.get("content-type") || "";
    if (type.includes("json")) {
      try { data = await res.json(); } catch (_) { data = null; }
    }
    if (!res.ok) {
      const e = (data && data.error) || {};
      throw new ApiError(res.status, e.code || "internal_error", e.message || "", e.fields);
    }
    return data;
  }

  /* Calls the API; a lapsed session goes back to sign-in, and a supervisor-only action asks
   * for the PIN once and retries. */
  async function api(method, path, body) {
    try {
      return await request(method, path, body);
    } catch (err) {
      if (err instanceof ApiError && err.code === "unauthenticated") {
        location.assign(`/ui/sign-in?next=${encodeURIComponent(location.pathname)}`);
      }
      if (err instanceof ApiError && err.code === "supervisor_required") {
        if (await elevate()) return request(method, path, body);
        throw new ApiError(403, "cancelled", "");
      }
      throw err;
    }
  }

  /* ---------- banner ---------- */
  const banner = document.getElementById("banner");
  function showError(err) {
    if (err instanceof ApiError && err.code === "cancelled") return;
    showBanner(describe(err), "error");
  }
  function showBanner(text, kind) {
    document.getElementById("banner-text").textContent = text;
    banner.className = `banner ${kind || "info"}`;
    banner.hidden = false;
  }
  function hideBanner() { banner.hidden = true; }
  document.getElementById("banner-close").addEventListener("click", hideBanner);

  /* ---------- modal dialogs ---------- */
  function modal(content) {
    const root = document.getElementById("modal-root");
    const overlay = el("div", { class: "overlay modal" }, el("div", { class: "card dialog" }, ...content));
    root.append(overlay);
    return { overlay, close: () => overlay.remove() };
  }

  const LETTERS = ["1234567890", "QWERTYUIOP", "ASDFGHJKL-", "ZXCVBNM_/."];
  const DIGITS = ["123", "456", "789", ".0"];

  /* On-screen keyboard for gloved fingers: big keys, no hover, digits-only where it helps. */
  function keypad(input, options) {
    const opts = options || {};
    let mode = opts.mode || (input.dataset.keypad === "digits" ? "digits" : "letters");
    const isSecret = input.type === "password";
    const display = el("output", { class: "keypad-display" });
    const keys = el("div", { class: "keys" });
    let value = input.value;
    let lower = isSecret; // secrets are mixed case; sample numbers are usually capitals
    const show = () => { display.textContent = isSecret ? "•".repeat(value.length) : value; };
    const press = (ch) => {
      if (value.length < (input.maxLength > 0 ? input.maxLength : 500)) value += ch;
      show();
    };
    const draw = () => {
      keys.replaceChildren();
      keys.className = `keys ${mode}`;
      for (const line of mode === "digits" ? DIGITS : LETTERS) {
        const row = el("div", { class: "key-row" });
        for (const raw of line) {
          const ch = lower ? raw.toLowerCase() : raw;
          row.append(el("button", { type: "button", class: "key", text: ch, onclick: () => press(ch) }));
        }
        keys.append(row);
      }
    };
    const done = () => {
      input.value = value;
      input.dispatchEvent(new Event("input", { bubbles: true }));
      input.dispatchEvent(new Event("change", { bubbles: true }));
      dialog.close();
      if (opts.onDone) opts.onDone(value);
    };
    const tools = el("div", { class: "key-row tools" },
      el("button", { type: "button", class: "key", text: mode === "digits" ? t("keypad.letters") : t("keypad.digits"),
        onclick: (ev) => { mode = mode === "digits" ? "letters" : "digits"; ev.target.textContent = mode === "digits" ? t("keypad.letters") : t("keypad.digits"); draw(); } }),
      el("button", { type: "button", class: "key", id: "keypad-case", text: lower ? "ABC" : "abc",
        onclick: (ev) => { lower = !lower; ev.target.textContent = lower ? "ABC" : "abc"; if (mode === "letters") draw(); } }),
      el("button", { type: "button", class: "key wide", text: t("keypad.space"), onclick: () => press(" ") }),
      el("button", { type: "button", class: "key", text: t("keypad.delete"), "aria-label": "backspace", onclick: () => { value = value.slice(0, -1); show(); } }),
      el("button", { type: "button", class: "key", text: t("keypad.clear"), onclick: () => { value = ""; show(); } }),
      el("button", { type: "button", class: "key primary", text: t("keypad.done"), onclick: done }));
    const title = (input.labels && input.labels[0] && input.labels[0].querySelector("span"))
      ? input.labels[0].querySelector("span").textContent : (input.getAttribute("aria-label") || t("keypad.title"));
    // The field's error (aria-describedby), shown inside the keypad: the overlay hides the page.
    const described = input.getAttribute("aria-describedby");
    const note = described ? document.getElementById(described) : null;
    const error = note && !note.hidden && note.textContent
      ? el("p", { class: "keypad-error", role: "alert", text: note.textContent }) : null;
    const dialog = modal([...(error ? [error] : []), el("div", { class: "keypad-head" }, el("span", { class: "keypad-title", text: title }), display,
      el("button", { type: "button", class: "ghost", text: t("common.cancel"), onclick: () => dialog.close() })), keys, tools]);
    dialog.overlay.classList.add("keypad");
    draw();
    show();
    return dialog;
  }

  /* Fields marked data-keypad open the keypad on a tap; a scanner (a keyboard) still types. */
  function bindKeypads(root) {
    for (const input of (root || document).querySelectorAll("[data-keypad]")) {
      input.addEventListener("pointerup", () => keypad(input));
    }
  }

  /* PIN prompt: resolves true once the session is elevated, false when cancelled. */
  function elevate() {
    return new Promise((resolve) => {
      let pin = "";
      const display = el("output", { class: "keypad-display", id: "pin-display" });
      const msg = el("p", { class: "hint", id: "pin-msg", text: t("pin.hint") });
      const keys = el("div", { class: "keys digits" });
      const show = () => { display.textContent = "•".repeat(pin.length); };
      for (const line of ["123", "456", "789"]) {
        const row = el("div", { class: "key-row" });
        for (const ch of line) row.append(el("button", { type: "button", class: "key", text: ch, "data-pin": ch, onclick: () => { pin += ch; show(); } }));
        keys.append(row);
      }
      const submit = async () => {
        try {
          await request("POST", "/api/auth/elevate", { pin });
          dialog.close();
          refreshSession();
          resolve(true);
        } catch (err) {
          pin = "";
          show();
          msg.textContent = err instanceof ApiError && err.code === "invalid_credentials" ? t("pin.wrong") : describe(err);
          msg.classList.add("error-text");
        }
      };
      keys.append(el("div", { class: "key-row" },
        el("button", { type: "button", class: "key", text: t("keypad.delete"), "aria-label": "backspace", onclick: () => { pin = pin.slice(0, -1); show(); } }),
        el("button", { type: "button", class: "key", text: "0", "data-pin": "0", onclick: () => { pin += "0"; show(); } }),
        el("button", { type: "button", class: "key primary", id: "pin-ok", text: t("common.ok"), onclick: submit })));
      const dialog = modal([el("div", { class: "keypad-head" }, el("span", { class: "keypad-title", text: t("pin.title") }), display,
        el("button", { type: "button", class: "ghost", id: "pin-cancel", text: t("common.cancel"), onclick: () => { dialog.close(); resolve(false); } })), msg, keys]);
      dialog.overlay.classList.add("pin");
      // A hardware keyboard works too (a supervisor at a desk).
      dialog.overlay.addEventListener("keydown", (ev) => {
        if (/^[0-9]$/.test(ev.key)) { pin += ev.key; show(); }
        else if (ev.key === "Backspace") { pin = pin.slice(0, -1); show(); }
        else if (ev.key === "Enter") submit();
      });
      dialog.overlay.tabIndex = -1;
      dialog.overlay.focus();
    });
  }

  /* The supervisor badge shows while the session is elevated; tapping it ends the window. */
  const badge = document.getElementById("supervisor-badge");
  let badgeTimer = null;
  async function refreshSession() {
    if (!badge) return;
    let s = null;
    try { s = await request("GET", "/api/auth/session"); } catch (_) { return; }
    badge.hidden = s.role !== "supervisor";
    clearTimeout(badgeTimer);
    if (s.role === "supervisor" && s.elevated_until) {
      const left = Date.parse(s.elevated_until) - Date.now();
      badgeTimer = setTimeout(refreshSession, Math.max(1000, left + 500));
    }
  }
  if (badge) {
    badge.addEventListener("click", async () => {
      try { await request("POST", "/api/auth/drop-elevation"); } catch (err) { showError(err); }
      refreshSession();
    });
    refreshSession();
  }

  /* ---------- language ---------- */
  for (const button of document.querySelectorAll("[data-lang]")) {
    button.addEventListener("click", () => {
      const lang = button.dataset.lang;
      document.cookie = `mp_lang=${lang}; Path=/; Max-Age=315360000; SameSite=Strict`;
      try { localStorage.setItem("mp_lang", lang); } catch (_) { /* private mode: the cookie is enough */ }
      location.reload();
    });
  }

  /* ---------- event socket ---------- */
  const handlers = [];
  const live = document.getElementById("live");
  let socket = null;
  let retry = 1000;
  function setLive(on) {
    if (!live) return;
    live.className = `live ${on ? "on" : "off"}`;
    live.textContent = on ? t("live.on") : t("live.off");
  }
  function connect() {
    if (!live) return; // signed out: no socket
    const scheme = location.protocol === "https:" ? "wss" : "ws";
    socket = new WebSocket(`${scheme}://${location.host}/api/events`);
    socket.addEventListener("open", () => { retry = 1000; setLive(true); });
    socket.addEventListener("message", (msg) => {
      let event;
      try { event = JSON.parse(msg.data); } catch (_) { return; }
      for (const fn of handlers) {
        try { fn(event); } catch (err) { console.error(err); }
      }
    });
    socket.addEventListener("close", (ev) => {
      setLive(false);
      if (ev.code === 1008) { location.assign(`/ui/sign-in?next=${encodeURIComponent(location.pathname)}`); return; }
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 15000);
    });
  }
  /* fn(event) for every appliance event. "hello" arrives on every (re)connect and
   * "events.dropped" when this client fell behind: pages re-fetch what they show on both. */
  function onEvent(fn) { handlers.push(fn); }

  /* ---------- formatting ---------- */
  const locale = boot.lang === "th" ? "th-TH" : "en-GB";
  function when(iso) {
    if (!iso) return "";
    const d = new Date(iso);
    return d.toLocaleString(locale, { dateStyle: "medium", timeStyle: "short" });
  }
  function age(seconds) {
    if (seconds === null || seconds === undefined) return t("common.none");
    if (seconds < 90) return t("time.seconds", { n: Math.round(seconds) });
    if (seconds < 5400) return t("time.minutes", { n: Math.round(seconds / 60) });
    if (seconds < 172800) return t("time.hours", { n: Math.round(seconds / 3600) });
    return t("time.days", { n: Math.round(seconds / 86400) });
  }
  /* Binary units, 1024-based, as core.present.bytes_text and the cloud dashboard show them. */
  function bytes(n) {
    if (n === null || n === undefined) return "—";
    const units = ["B", "KiB", "MiB", "GiB", "TiB"];
    let i = 0;
    let v = n;
    while (Math.abs(v) >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return i === 0 ? `${Math.round(v)} B` : `${v.toFixed(1)} ${units[i]}`;
  }
  function num(v, digits) {
    if (v === null || v === undefined) return "—";
    return Number(v).toLocaleString(locale, { maximumFractionDigits: digits === undefined ? 1 : digits });
  }
  function titre(v) {
    if (v === null || v === undefined) return "—";
    return Number.isInteger(v) ? String(v) : num(v, 1);
  }
  function csvState(csv) {
    if (!csv) return t("result.csv_none");
    if (csv.pending) return t("result.csv_pending");
    return csv.file_name ? t("result.csv_written", { file: csv.file_name }) : t("result.csv_none");
  }

  /* Long-polls a capture ticket until it is done or failed, reporting stages as they come. */
  async function follow(ticket, onStage) {
    if (ticket.run_id && ticket.state === "done") return ticket.run_id;
    const stageFromEvents = (ev) => {
      if (ev.type === "capture.progress" && ev.payload.ticket_id === ticket.id) onStage(ev.payload.stage || ev.payload.state);
    };
    handlers.push(stageFromEvents);
    try {
      onStage(ticket.state);
      for (;;) {
        const state = await api("GET", `/api/tickets/${encodeURIComponent(ticket.id)}?wait=20`);
        onStage(state.stage || state.state);
        if (state.state === "done") return state.run_id;
        if (state.state === "failed") {
          const e = state.error || {};
          throw new ApiError(422, e.code || "internal_error", e.message || "");
        }
      }
    } finally {
      handlers.splice(handlers.indexOf(stageFromEvents), 1);
    }
  }

  function progress(show, stage) {
    const box = document.getElementById("progress");
    if (!box) return;
    box.hidden = !show;
    if (stage) {
      const key = `progress.${stage}`;
      document.getElementById("progress-stage").textContent =
        Object.prototype.hasOwnProperty.call(strings, key) ? strings[key] : stage;
    }
  }

  document.addEventListener("DOMContentLoaded", () => {
    bindKeypads(document);
    connect();
  });

  return {
    boot, t, el, api, request, ApiError, describe, showError, showBanner, hideBanner, modal,
    keypad, elevate, onEvent, when, age, bytes, num, titre, csvState, follow, progress,
    refreshSession,
  };
})();
