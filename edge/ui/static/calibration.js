/* Calibration (supervisor): drag the grid's lines over a captured frame, or accept the
 * proposed grid, then save. Coordinates are the frame's pixels, as the API stores them. */
"use strict";
(() => {
  const { t, api, showError, showBanner, hideBanner, onEvent } = MP;
  const NS = "http://www.w3.org/2000/svg";
  const svg = document.getElementById("grid-svg");
  const msg = document.getElementById("cal-msg");
  const HIT_PX = 28; // how close (screen px) a touch must land to grab a line
  let frame = null; // {url, width, height}
  let saved = null; // grid as loaded (for "undo changes")
  let grid = null; // {columns, rows, image_width, image_height}
  let selected = null; // {kind: "columns"|"rows", index}
  let drag = null;

  const copy = (g) => ({ columns: [...g.columns], rows: [...g.rows], image_width: g.image_width, image_height: g.image_height });
  /* A grid made on another frame size is shown (and saved) in the shown frame's pixels; the
   * appliance scales grids per axis the same way, so nothing about the wells changes. */
  function fitToFrame(g) {
    if (!frame || (g.image_width === frame.width && g.image_height === frame.height)) return copy(g);
    const sx = frame.width / g.image_width;
    const sy = frame.height / g.image_height;
    const round = (v) => Math.round(v * 10) / 10;
    return { columns: g.columns.map((v) => round(v * sx)), rows: g.rows.map((v) => round(v * sy)), image_width: frame.width, image_height: frame.height };
  }
  function uniform(width, height, cols, rows) {
    const mx = width * 0.04;
    const my = height * 0.05;
    const line = (n, a, b) => Array.from({ length: n + 1 }, (_, i) => Math.round((a + ((b - a) * i) / n) * 10) / 10);
    return { columns: line(cols, mx, width - mx), rows: line(rows, my, height - my), image_width: width, image_height: height };
  }

  function node(tag, attrs, parent) {
    const n = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) n.setAttribute(k, String(v));
    (parent || svg).append(n);
    return n;
  }

  function draw() {
    svg.replaceChildren();
    if (!grid) return;
    const W = grid.image_width;
    const H = grid.image_height;
    svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
    if (frame) node("image", { href: frame.url, x: 0, y: 0, width: W, height: H, preserveAspectRatio: "none" });
    else node("rect", { x: 0, y: 0, width: W, height: H, class: "no-frame" });
    for (const kind of ["columns", "rows"]) {
      grid[kind].forEach((v, i) => {
        const isCol = kind === "columns";
        const attrs = isCol ? { x1: v, x2: v, y1: 0, y2: H } : { x1: 0, x2: W, y1: v, y2: v };
        const sel = selected && selected.kind === kind && selected.index === i;
        node("line", { ...attrs, class: `grid-line ${isCol ? "col" : "row"}${sel ? " selected" : ""}`,
          "data-kind": kind, "data-index": i, "vector-effect": "non-scaling-stroke" });
        const r = 14 * unitsPerPx();
        node("circle", { cx: isCol ? v : r * 1.2, cy: isCol ? r * 1.2 : v, r, class: `handle${sel ? " selected" : ""}` });
      });
    }
    const label = document.getElementById("cal-selected");
    label.textContent = selected ? t("calibration.selected", { line: selected.kind === "columns" ? `| ${selected.index + 1}` : `— ${selected.index + 1}` }) : "";
  }

  function unitsPerPx() {
    const rect = svg.getBoundingClientRect();
    if (!grid || rect.width === 0) return 1;
    return Math.max(grid.image_width / rect.width, grid.image_height / rect.height);
  }
  function toGrid(ev) {
    const pt = svg.createSVGPoint();
    pt.x = ev.clientX;
    pt.y = ev.clientY;
    return pt.matrixTransform(svg.getScreenCTM().inverse());
  }
  /* Lines stay strictly increasing: a line never passes its neighbours. */
  function clamp(kind, index, value) {
    const lines = grid[kind];
    const limit = kind === "columns" ? grid.image_width : grid.image_height;
    const lo = index > 0 ? lines[index - 1] + 1 : 0;
    const hi = index < lines.length - 1 ? lines[index + 1] - 1 : limit;
    return Math.round(Math.min(hi, Math.max(lo, value)) * 10) / 10;
  }
  function nearest(p) {
    const reach = HIT_PX * unitsPerPx();
    let best = null;
    for (const [kind, coord] of [["columns", p.x], ["rows", p.y]]) {
      grid[kind].forEach((v, i) => {
        const d = Math.abs(v - coord);
        if (d <= reach && (!best || d < best.d)) best = { kind, index: i, d };
      });
    }
    return best;
  }

  svg.addEventListener("pointerdown", (ev) => {
    if (!grid) return;
    const hit = nearest(toGrid(ev));
    if (!hit) return;
    selected = { kind: hit.kind, index: hit.index };
    drag = { pointer: ev.pointerId };
    svg.setPointerCapture(ev.pointerId);
    ev.preventDefault();
    draw();
  });
  svg.addEventListener("pointermove", (ev) => {
    if (!drag || ev.pointerId !== drag.pointer) return;
    const p = toGrid(ev);
    grid[selected.kind][selected.index] = clamp(selected.kind, selected.index, selected.kind === "columns" ? p.x : p.y);
    draw();
  });
  const end = () => { drag = null; };
  svg.addEventListener("pointerup", end);
  svg.addEventListener("pointercancel", end);

  function nudge(sign) {
    if (!selected) return;
    const step = Math.max(1, Math.round(unitsPerPx()));
    grid[selected.kind][selected.index] = clamp(selected.kind, selected.index, grid[selected.kind][selected.index] + sign * step);
    draw();
  }
  document.getElementById("nudge-minus").addEventListener("click", () => nudge(-1));
  document.getElementById("nudge-plus").addEventListener("click", () => nudge(1));
  document.getElementById("reset").addEventListener("click", () => { if (saved) { grid = copy(saved); draw(); } });

  document.getElementById("propose").addEventListener("click", async () => {
    hideBanner();
    try {
      const proposal = await api("POST", "/api/calibration/proposal");
      grid = fitToFrame(proposal);
      msg.textContent = t("calibration.proposed");
      draw();
    } catch (err) {
      showError(err);
    }
  });

  document.getElementById("save-grid").addEventListener("click", async () => {
    hideBanner();
    try {
      const reading = document.getElementById("cal-reading").value;
      const out = await api("PUT", "/api/calibration", { ...copy(grid), format_version: 3, ...(reading ? { reading } : {}) });
      saved = { columns: out.columns, rows: out.rows, image_width: out.image_width, image_height: out.image_height };
      grid = copy(saved);
      draw();
      showBanner(t("calibration.saved"), "info");
    } catch (err) {
      showError(err);
    }
  });

  async function loadFrame() {
    // The newest captured plate is the frame to calibrate on; a live view is the fallback.
    try {
      const page = await api("GET", "/api/runs?limit=1");
      if (page.items.length) return await imageSize(`/api/runs/${encodeURIComponent(page.items[0].run_id)}/images/raw`);
    } catch (_) { /* fall through */ }
    try {
      const res = await fetch("/api/capture/preview.jpg", { credentials: "same-origin" });
      if (res.ok) return await imageSize(URL.createObjectURL(await res.blob()));
    } catch (_) { /* no frame */ }
    return null;
  }
  function imageSize(url) {
    return new Promise((resolve) => {
      const img = new Image();
      img.onload = () => resolve({ url, width: img.naturalWidth, height: img.naturalHeight });
      img.onerror = () => resolve(null);
      img.src = url;
    });
  }

  async function load() {
    frame = await loadFrame();
    let current = null;
    try {
      current = await api("GET", "/api/calibration");
    } catch (err) {
      if (err.code !== "no_calibration") showError(err);
    }
    document.getElementById("cal-reading").value = (current && current.reading) || "";
    if (current) {
      saved = fitToFrame({ columns: current.columns, rows: current.rows, image_width: current.image_width, image_height: current.image_height });
    } else {
      saved = uniform(frame ? frame.width : 1700, frame ? frame.height : 1200, 12, 8);
      msg.textContent = t("calibration.none");
    }
    if (!frame) msg.textContent = t("calibration.no_frame");
    grid = copy(saved);
    draw();
    // Saving before the grid has loaded would send nothing sensible: the button waits for it.
    document.getElementById("save-grid").disabled = false;
  }
  window.addEventListener("resize", draw);
  onEvent((ev) => { if (ev.type === "calibration.updated" && !drag) load(); });
  load();
})();
