/* The plate map: one cell per well, coloured by call, with confidence and flag marks. */
"use strict";
MP.STATES = ["flowing", "agglutinated", "invalid", "unread"];

MP.drawPlate = (container, wells) => {
  const { el, t } = MP;
  // Row/column numbering may start at 0 or 1: place wells relative to the smallest.
  const rows = [...new Set(wells.map((w) => w.row))].sort((a, b) => a - b);
  const cols = [...new Set(wells.map((w) => w.col))].sort((a, b) => a - b);
  const byPos = new Map(wells.map((w) => [`${w.row}:${w.col}`, w]));
  container.replaceChildren();
  container.style.setProperty("--cols", String(cols.length));
  container.style.setProperty("--rows", String(rows.length));
  container.append(el("div", { class: "corner" }));
  cols.forEach((c, i) => container.append(el("div", { class: "col-label", text: i + 1 })));
  rows.forEach((r, ri) => {
    container.append(el("div", { class: "row-label", text: String.fromCharCode(65 + ri) }));
    for (const c of cols) {
      const w = byPos.get(`${r}:${c}`);
      const state = w ? w.state : "unread";
      const flags = w ? w.flags : [];
      const conf = w && w.confidence !== null && w.confidence !== undefined ? Math.round(w.confidence * 100) : null;
      const label = `${w ? w.well_id : ""}: ${t(`state.${state}`)}` +
        (conf !== null ? `, ${t("result.conf")} ${conf}%` : "") +
        (flags.length ? `, ${flags.map((f) => t(`flag.${f}`)).join(", ")}` : "");
      container.append(el("div", {
        class: `well ${state}${flags.length ? " flagged" : ""}`,
        title: label, "aria-label": label, "data-well": w ? w.well_id : "", "data-state": state,
      }, el("span", { class: "conf", text: conf !== null ? conf : "" }),
         flags.length ? el("span", { class: "flag-mark", text: "!" }) : null));
    }
  });
};

MP.drawLegend = (container) => {
  const { el, t } = MP;
  container.replaceChildren(...MP.STATES.map((s) =>
    el("span", { class: "legend-item" }, el("span", { class: `swatch well ${s}` }), t(`state.${s}`))));
};
