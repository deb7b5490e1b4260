/* One sample: pooled distribution chart, statistics, runs and its LabWare CSV state. */
"use strict";
(() => {
  const { t, el, api, showError, onEvent, when, num, csvState } = MP;
  const sampleNumber = document.querySelector(".sample").dataset.sample;

  function render(s) {
    MP.drawDistribution(document.getElementById("chart"), s.distribution);
    const st = s.statistics || {};
    const rows = [
      ["stat.n", num(st.n, 0)],
      ["stat.gmt", num(st.gmt, 1)],
      ["stat.mean_log2", num(st.mean_log2, 2)],
      ["stat.sd_log2", num(st.sd_log2, 2)],
      ["stat.cv_pct", num(st.cv_pct, 1)],
      ["stat.excluded_total", num(st.excluded_total || 0, 0)],
    ];
    if (st.protective_titre) rows.push([t("stat.share_protective", { t: st.protective_titre }), st.share_protective === null || st.share_protective === undefined ? "—" : `${num(st.share_protective * 100, 0)} %`]);
    document.getElementById("stats").replaceChildren(...rows.flatMap(([k, v]) => [
      el("dt", { text: k.startsWith("stat.") ? t(k) : k }), el("dd", { text: v, "data-stat": k })]));
    document.getElementById("runs").replaceChildren(...s.runs.map((r) => el("li", {},
      el("a", { class: "row-link", href: `/ui/runs/${encodeURIComponent(r.run_id)}`, "data-run": r.run_id },
        el("span", { class: `chip ${r.needs_review && r.status === "current" ? "needs_review" : r.status}`,
          text: t(`status.${r.needs_review && r.status === "current" ? "needs_review" : r.status}`) }),
        el("span", { class: "cell", text: when(r.captured_at) }),
        el("span", { class: "cell meta", text: r.submission_number || "" })))));
    document.getElementById("s-csv").textContent = `${t("sample.csv")}: ${csvState(s.csv)}`;
  }

  async function load() {
    try { render(await api("GET", `/api/samples/${encodeURIComponent(sampleNumber)}`)); } catch (err) { showError(err); }
  }
  onEvent((ev) => {
    const p = ev.payload || {};
    if (ev.type === "hello" || ev.type === "events.dropped" || (p.sample_number === sampleNumber && ev.type.startsWith("sample."))) load();
    else if (ev.type.startsWith("run.") && p.sample_number === sampleNumber) load();
  });
  load();
})();
