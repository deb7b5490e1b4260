/* Capture: live preview, three fields filled by a scan or the keypad, one big button. */
"use strict";
(() => {
  const { t, api, showError, hideBanner, onEvent, when, follow, progress } = MP;
  const fields = ["sample", "submission", "description"].map((id) => document.getElementById(id));
  const [sample] = fields;
  const form = document.getElementById("capture-form");
  const button = document.getElementById("capture-btn");
  const DRAFT = "mp_capture_draft";

  /* A scan of SAMPLE,SUBMISSION,DESCRIPTION or SAMPLE|SUBMISSION|DESCRIPTION fills all three
   * fields (as the old system did); the description keeps any further separators. */
  function splitScan(text) {
    const sep = text.includes("|") ? "|" : text.includes(",") ? "," : null;
    if (!sep) return null;
    const parts = text.split(sep);
    return [parts[0], parts[1] || "", parts.slice(2).join(sep)].map((s) => s.trim());
  }
  function applyScan(input) {
    const parts = splitScan(input.value);
    if (!parts) return false;
    fields.forEach((f, i) => { f.value = parts[i]; });
    saveDraft();
    return true;
  }
  function saveDraft() {
    try { sessionStorage.setItem(DRAFT, JSON.stringify(fields.map((f) => f.value))); } catch (_) { /* ignore */ }
  }
  for (const f of fields) {
    f.addEventListener("change", () => applyScan(f));
    f.addEventListener("input", saveDraft);
    f.addEventListener("keydown", (ev) => {
      // Scanners end with Enter: split a combined scan instead of submitting it as a sample.
      if (ev.key === "Enter" && applyScan(f)) ev.preventDefault();
    });
  }
  // A scan while nothing is focused still lands in the sample field.
  document.addEventListener("keydown", (ev) => {
    if (document.activeElement === document.body && ev.key.length === 1 && !ev.ctrlKey && !ev.altKey && !ev.metaKey) {
      sample.focus();
    }
  });
  try {
    const draft = JSON.parse(sessionStorage.getItem(DRAFT) || "null");
    if (Array.isArray(draft)) fields.forEach((f, i) => { f.value = draft[i] || ""; });
  } catch (_) { /* no draft */ }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    hideBanner();
    applyScan(sample);
    if (!sample.value.trim()) {
      MP.showBanner(t("capture.need_sample"), "error");
      sample.focus();
      return;
    }
    button.disabled = true;
    progress(true, "capture");
    try {
      const ticket = await api("POST", "/api/capture", {
        sample_number: sample.value.trim(),
        submission_number: fields[1].value.trim(),
        description: fields[2].value.trim(),
        operator: "",
      });
      // A ticket that already names a run: this picture was stored before (edge.schemas.Ticket).
      let duplicate = Boolean(ticket.run_id);
      const runId = await follow(ticket, (stage) => { duplicate = duplicate || stage === "duplicate"; progress(true, stage); });
      try { sessionStorage.removeItem(DRAFT); } catch (_) { /* ignore */ }
      // The same picture was read before: its earlier result is shown, and the page says so.
      location.assign(`/ui/runs/${encodeURIComponent(runId)}${duplicate ? "?duplicate=1" : ""}`);
    } catch (err) {
      progress(false);
      showError(err);
      button.disabled = false;
    }
  });

  /* Live preview: only when the source has a live view (a files or folder source has none). */
  const preview = document.getElementById("preview");
  fetch("/api/capture/preview.jpg", { credentials: "same-origin" }).then((res) => {
    if (res.ok) {
      preview.src = "/api/capture/preview.mjpg";
      preview.hidden = false;
      preview.addEventListener("error", () => { preview.hidden = true; document.getElementById("no-preview").hidden = false; });
    } else {
      document.getElementById("no-preview").hidden = false;
    }
  }, () => { document.getElementById("no-preview").hidden = false; });

  /* The last result, kept live: a plate read from the folder inbox shows up here too. */
  const last = document.getElementById("last");
  async function showLast() {
    let page;
    try { page = await api("GET", "/api/runs?limit=1"); } catch (_) { return; }
    const run = page.items[0];
    if (!run) { last.hidden = true; return; }
    last.href = `/ui/runs/${encodeURIComponent(run.run_id)}`;
    document.getElementById("last-sample").textContent = run.sample_number;
    document.getElementById("last-time").textContent = when(run.processed_at);
    last.hidden = false;
  }
  onEvent((ev) => {
    if (["hello", "events.dropped", "run.created", "run.deleted"].includes(ev.type)) showLast();
  });
  showLast();
})();
