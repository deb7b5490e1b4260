/* Review one run: the plate image with the grid and each well's call. Tapping a well cycles
   flowing -> agglutinated -> invalid; "Save" sends the corrections, "Accept as read" also
   releases a run held for review so it counts; "Re-read" reads the plate again. Each save is a
   new edit of the run: the appliance recomputes rows, titres, the sample and its CSV. */
"use strict";
(() => {
  const { t, el, api, showError, showBanner, onEvent, when, titre, follow, progress } = MP;
  const section = document.querySelector(".review-run");
  const runId = section.dataset.runId;
  const svg = document.getElementById("rv-plate");
  const NS = "http://www.w3.org/2000/svg";
  const CYCLE = ["flowing", "agglutinated", "invalid"];
  let run = null;
  let changes = {}; // well id -> state the operator set (only those that differ from the run)
  let image = null; // { url, width, height } of the raw plate image, or null while loading

  const svgEl = (tag, attrs, ...children) => {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs || {})) if (v !== null && v !== undefined) node.setAttribute(k, String(v));
    for (const c of children) if (c) node.append(c);
    return node;
  };
  const rowTitre = (r) => r.titre_text || (r.titre === null || r.titre === undefined ? "—" : titre(r.titre));
  const stateOf = (w) => changes[w.well_id] || w.state;

  /* Where each well sits on the image: its box centre when the reader gave one; otherwise the
     mean of its column and row (boxes of the other wells), or an even grid over the image. */
  function layout(wells, width, height) {
    const rows = [...new Set(wells.map((w) => w.row))].sort((a, b) => a - b);
    const cols = [...new Set(wells.map((w) => w.col))].sort((a, b) => a - b);
    const xs = new Map(); const ys = new Map(); const sizes = [];
    for (const w of wells) {
      if (!w.box) continue;
      const [x1, y1, x2, y2] = w.box;
      (xs.get(w.col) || xs.set(w.col, []).get(w.col)).push((x1 + x2) / 2);
      (ys.get(w.row) || ys.set(w.row, []).get(w.row)).push((y1 + y2) / 2);
      sizes.push(Math.min(x2 - x1, y2 - y1));
    }
    const mean = (a) => a.reduce((s, v) => s + v, 0) / a.length;
    const even = (i, n, span) => span * (0.03 + 0.94 * (i + 0.5) / n);
    const colX = new Map(cols.map((c, i) => [c, xs.has(c) ? mean(xs.get(c)) : even(i, cols.length, width)]));
    const rowY = new Map(rows.map((r, i) => [r, ys.has(r) ? mean(ys.get(r)) : even(i, rows.length, height)]));
    const pitch = Math.min(width / (cols.length + 0.5), height / (rows.length + 0.5));
    const radius = sizes.length ? Math.min(mean(sizes) / 2, pitch * 0.48) : pitch * 0.4;
    return { rows, cols, colX, rowY, radius, pitch };
  }

  function drawPlate() {
    const width = image ? image.width : 1200;
    const height = image ? image.height : 800;
    const g = layout(run.wells, width, height);
    svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
    svg.replaceChildren();
    if (image) svg.append(svgEl("image", { href: image.url, x: 0, y: 0, width, height }));
    // The grid: lines half-way between neighbouring columns and rows, and around the plate.
    const edges = (centres) => {
      const c = [...centres]; const out = [];
      for (let i = 0; i <= c.length; i += 1) {
        if (i === 0) out.push(c[0] - (c.length > 1 ? (c[1] - c[0]) / 2 : g.pitch / 2));
        else if (i === c.length) out.push(c[i - 1] + (c.length > 1 ? (c[i - 1] - c[i - 2]) / 2 : g.pitch / 2));
        else out.push((c[i - 1] + c[i]) / 2);
      }
      return out;
    };
    const xEdges = edges(g.cols.map((c) => g.colX.get(c)));
    const yEdges = edges(g.rows.map((r) => g.rowY.get(r)));
    const grid = svgEl("g", { class: "rv-grid" });
    for (const x of xEdges) grid.append(svgEl("line", { x1: x, x2: x, y1: yEdges[0], y2: yEdges[yEdges.length - 1] }));
    for (const y of yEdges) grid.append(svgEl("line", { y1: y, y2: y, x1: xEdges[0], x2: xEdges[xEdges.length - 1] }));
    svg.append(grid);
    const font = Math.max(10, g.radius * 0.9);
    for (const w of run.wells) {
      const state = stateOf(w);
      const changed = Object.prototype.hasOwnProperty.call(changes, w.well_id);
      const corrected = w.model_state && w.model_state !== w.state;
      const cx = g.colX.get(w.col); const cy = g.rowY.get(w.row);
      const label = `${w.well_id}: ${t(`state.${state}`)}` +
        (w.model_state && w.model_state !== state ? ` (${t("rv.model_said")} ${t(`state.${w.model_state}`)})` : "");
      svg.append(svgEl("g", {
        class: `rv-well ${state}${changed ? " changed" : ""}${corrected ? " corrected" : ""}`,
        "data-well": w.well_id, "data-state": state, role: "button", tabindex: 0, "aria-label": label,
      },
        svgEl("title", {}, document.createTextNode(label)),
        svgEl("circle", { cx, cy, r: g.radius }),
        svgEl("text", { x: cx, y: cy, "font-size": font, "text-anchor": "middle", "dominant-baseline": "central" },
          document.createTextNode(t(`rv.short.${state}`)))));
    }
  }

  function renderChanges() {
    const ids = Object.keys(changes).sort();
    document.getElementById("rv-changes").textContent = ids.length
      ? `${t("rv.changes")}: ${ids.map((id) => `${id} → ${t(`state.${changes[id]}`)}`).join(", ")}`
      : "";
    const gone = run.status !== "current";
    document.getElementById("rv-save").disabled = gone || ids.length === 0;
    document.getElementById("rv-accept").disabled = gone;
    document.getElementById("rv-reread").disabled = run.status === "deleted";
  }

  function render() {
    document.getElementById("rv-sample").textContent = run.sample_number;
    const status = document.getElementById("rv-status");
    const shown = run.needs_review && run.status === "current" ? "needs_review" : run.status;
    status.textContent = t(`status.${shown}`);
    status.className = `chip ${shown}`;
    document.getElementById("rv-meta").textContent = when(run.captured_at);
    const held = document.getElementById("rv-held");
    held.hidden = !run.needs_review;
    if (run.needs_review) {
      const reasons = (run.review_reasons || []).map((r) => t(`review.${r}`));
      held.replaceChildren(el("strong", { text: t("rv.held") }),
        reasons.length ? el("span", { text: ` (${reasons.join("; ")})` }) : null);
    }
    const notice = document.getElementById("rv-notice");
    notice.hidden = run.status === "current";
    if (run.status === "deleted") notice.replaceChildren(t("result.deleted"));
    else if (run.status === "superseded") {
      notice.replaceChildren(t("result.superseded"), " ", el("a", {
        class: "button", href: `/ui/review/${encodeURIComponent(run.superseded_by)}`, text: t("result.open_newer"),
      }));
    }
    document.getElementById("rv-edit").textContent = run.reviewed_at
      ? t("rv.reviewed", { n: run.edit, when: when(run.reviewed_at), by: reviewerName(run.reviewed_by) }) : "";
    MP.drawLegend(document.getElementById("legend"));
    const body = document.querySelector("#rv-rows tbody");
    body.replaceChildren(...run.rows.map((r) => el("tr", { class: r.counted ? "" : "excluded", "data-row": r.label },
      el("th", { text: r.label }),
      el("td", { class: "endpoint", text: r.endpoint }),
      el("td", { class: "titre", text: rowTitre(r) }),
      el("td", { class: "flags" }, ...r.flags.map((f) => el("span", { class: "flag", text: t(`flag.${f}`) }))))));
    drawPlate();
    renderChanges();
  }

  function loadImage() {
    const url = `/api/runs/${encodeURIComponent(runId)}/images/raw`;
    const img = new Image();
    img.onload = () => { image = { url, width: img.naturalWidth, height: img.naturalHeight }; if (run) drawPlate(); };
    img.onerror = () => { image = null; };
    img.src = url;
  }

  async function load() {
    try {
      run = await api("GET", `/api/runs/${encodeURIComponent(runId)}`);
      render();
    } catch (err) {
      if (err.code === "not_found") showBanner(t("result.not_found"), "error");
      else showError(err);
    }
  }

  function cycle(wellId) {
    if (!run || run.status !== "current") return;
    const w = run.wells.find((x) => x.well_id === wellId);
    if (!w) return;
    const i = CYCLE.indexOf(stateOf(w));
    const next = CYCLE[(i + 1) % CYCLE.length]; // unread (-1) goes to flowing
    if (next === w.state) delete changes[wellId];
    else changes[wellId] = next;
    drawPlate();
    renderChanges();
  }

  svg.addEventListener("click", (ev) => {
    const g = ev.target.closest(".rv-well");
    if (g) cycle(g.getAttribute("data-well"));
  });
  svg.addEventListener("keydown", (ev) => {
    const g = ev.target.closest(".rv-well");
    if (g && (ev.key === "Enter" || ev.key === " ")) { ev.preventDefault(); cycle(g.getAttribute("data-well")); }
  });

  // Who reviews: typed once, remembered on this screen; recorded with every review (the kiosk
  // signs in with one shared operator secret, so the session alone names nobody).
  const reviewerInput = document.getElementById("rv-reviewer");
  const reviewerError = document.getElementById("rv-reviewer-error");
  reviewerInput.value = localStorage.getItem("mp.reviewer") || "";
  reviewerInput.addEventListener("input", () => { reviewerError.hidden = true; });

  // "Ann (supervisor:1a2b@127.0.0.1)" -> "Ann"; a review without a typed name shows the session.
  function reviewerName(by) {
    return (by || "").replace(/ \([^()]*\)$/, "") || "?";
  }

  async function send(accept) {
    const reviewer = reviewerInput.value.trim();
    if (!reviewer) {
      reviewerError.textContent = t("rv.reviewer_needed");
      reviewerError.hidden = false;
      reviewerInput.focus();
      return;
    }
    try {
      run = await api("POST", `/api/runs/${encodeURIComponent(runId)}/review`, { wells: changes, accept, reviewer });
      localStorage.setItem("mp.reviewer", reviewer);
      changes = {};
      render();
      showBanner(t("rv.saved", { n: run.edit }), "info");
    } catch (err) {
      showError(err);
    }
  }
  document.getElementById("rv-save").addEventListener("click", () => send(false));
  document.getElementById("rv-accept").addEventListener("click", () => send(true));

  document.getElementById("rv-reread").addEventListener("click", async () => {
    progress(true, "queued");
    try {
      const ticket = await api("POST", `/api/runs/${encodeURIComponent(runId)}/reread`);
      const newRun = await follow(ticket, (stage) => progress(true, stage));
      location.assign(`/ui/review/${encodeURIComponent(newRun)}`);
    } catch (err) {
      progress(false);
      showError(err);
    }
  });

  onEvent((ev) => {
    const p = ev.payload || {};
    // Another screen changed this run: reload unless corrections are being made here.
    const mine = (ev.type === "run.updated" || ev.type === "run.deleted") && p.run_id === runId;
    if ((ev.type === "hello" || mine) && Object.keys(changes).length === 0) load();
  });

  loadImage();
  load();
})();
