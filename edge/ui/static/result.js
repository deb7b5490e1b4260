/* Result: plate map, per-row endpoints and titres, the annotated image, re-read and delete. */
"use strict";
(() => {
  const { t, el, api, showError, showBanner, onEvent, when, titre, csvState, follow, progress } = MP;
  const section = document.querySelector(".result");
  const runId = section.dataset.runId;
  let run = null;

  /* Censored titres say so ("< 10", "≥ 20480"): the text comes from core.present, as the
     cloud dashboard shows it. */
  function rowTitre(r) {
    return r.titre_text || (r.titre === null || r.titre === undefined ? "—" : titre(r.titre));
  }

  function render() {
    document.getElementById("r-sample").textContent = run.sample_number;
    const status = document.getElementById("r-status");
    const shown = run.needs_review && run.status === "current" ? "needs_review" : run.status;
    status.textContent = t(`status.${shown}`);
    status.className = `chip ${shown}`;
    const meta = [];
    if (run.submission_number) meta.push(`${t("result.submission")}: ${run.submission_number}`);
    if (run.description) meta.push(run.description);
    meta.push(when(run.captured_at));
    document.getElementById("r-meta").textContent = meta.join(" · ");
    MP.drawPlate(document.getElementById("plate"), run.wells);
    MP.drawLegend(document.getElementById("legend"));
    const body = document.querySelector("#rows tbody");
    body.replaceChildren(...run.rows.map((r) => el("tr", {
      class: r.counted ? "" : "excluded", "data-row": r.label,
      "data-info": `${t("result.row")} ${r.label}: ${t("result.titre")} ${rowTitre(r)}` +
        (r.flags.length ? ` · ${r.flags.map((f) => t(`flag.${f}`)).join(", ")}` : "") +
        (r.counted ? "" : ` · ${t("result.excluded")}`),
    },
      el("th", { text: r.label }),
      el("td", { class: "endpoint", text: r.endpoint }),
      el("td", { class: "titre", text: rowTitre(r) }),
      el("td", { class: "flags" }, ...r.flags.map((f) => el("span", { class: "flag", text: t(`flag.${f}`) })),
        r.counted ? null : el("span", { class: "flag excluded-flag", text: t("result.excluded") })))));
    const stats = run.statistics || {};
    document.getElementById("r-counted").textContent =
      `${t("result.counted", { n: run.rows_counted, x: run.rows_excluded })}` +
      (stats.gmt !== null && stats.gmt !== undefined ? ` · ${t("result.gmt")} ${MP.num(stats.gmt, 1)}` : "");
    document.getElementById("r-csv").textContent = `${t("result.csv")}: ${csvState(run.csv)}`;
    const thumbKind = run.images.thumbnail ? "thumbnail" : run.images.annotated ? "annotated" : "raw";
    document.getElementById("thumb").src = `/api/runs/${encodeURIComponent(runId)}/images/${thumbKind}`;
    const review = document.getElementById("r-review");
    review.hidden = !run.needs_review;
    if (run.needs_review) {
      const reasons = (run.review_reasons || []).map((r) => t(`review.${r}`));
      review.replaceChildren(el("strong", { text: t("result.needs_review") }),
        reasons.length ? el("span", { text: ` (${reasons.join("; ")})` }) : null);
    }
    const notice = document.getElementById("r-notice");
    const gone = run.status === "deleted";
    document.getElementById("reread").disabled = gone;
    document.getElementById("delete").disabled = gone;
    if (gone) {
      notice.replaceChildren(t("result.deleted"));
      notice.hidden = false;
    } else if (run.status === "superseded" && run.superseded_by) {
      notice.replaceChildren(t("result.superseded"), " ",
        el("a", { class: "button", href: `/ui/runs/${encodeURIComponent(run.superseded_by)}`, text: t("result.open_newer") }));
      notice.hidden = false;
    } else {
      notice.hidden = true;
    }
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

  // No hover on a touchscreen: tapping a well spells out its call, confidence and flags.
  document.getElementById("plate").addEventListener("click", (ev) => {
    const well = ev.target.closest(".well");
    if (well) document.getElementById("well-info").textContent = well.getAttribute("aria-label");
  });
  document.getElementById("rows").addEventListener("click", (ev) => {
    const row = ev.target.closest("tr[data-info]");
    if (row) document.getElementById("well-info").textContent = row.dataset.info;
  });

  onEvent((ev) => {
    const p = ev.payload || {};
    if (ev.type === "hello" || ev.type === "events.dropped") load();
    else if ((ev.type === "run.updated" || ev.type === "run.deleted") && p.run_id === runId) load();
    else if (ev.type === "sample.updated" && run && p.sample_number === run.sample_number) load();
  });

  document.getElementById("reread").addEventListener("click", async () => {
    progress(true, "queued");
    try {
      const ticket = await api("POST", `/api/runs/${encodeURIComponent(runId)}/reread`);
      const newRun = await follow(ticket, (stage) => progress(true, stage));
      location.assign(`/ui/runs/${encodeURIComponent(newRun)}`);
    } catch (err) {
      progress(false);
      showError(err);
    }
  });

  /* Delete: a supervisor action with a reason (kept in the audit log). */
  document.getElementById("delete").addEventListener("click", () => {
    const reasons = ["result.reason_wrong_sample", "result.reason_bad_image", "result.reason_duplicate"];
    const dialog = MP.modal([
      el("h2", { text: t("result.delete_title") }),
      el("p", { class: "hint", text: t("result.delete_reason") }),
      el("div", { class: "reasons" }, ...reasons.map((key) => el("button", {
        type: "button", class: "danger", "data-reason": key, text: t(key),
        onclick: () => { dialog.close(); remove(t(key)); },
      }))),
      el("button", { type: "button", class: "ghost", text: t("common.cancel"), onclick: () => dialog.close() }),
    ]);
  });
  async function remove(reason) {
    try {
      await api("DELETE", `/api/runs/${encodeURIComponent(runId)}?reason=${encodeURIComponent(reason)}`);
      await load();
    } catch (err) {
      showError(err);
    }
  }

  /* The annotated image, full screen, with zoom buttons and panning by dragging. */
  const zoom = document.getElementById("zoom");
  const view = document.getElementById("zoom-view");
  const img = document.getElementById("zoom-img");
  let scale = 1;
  // Scale 1 shows the whole plate; zooming multiplies that fitted width.
  const apply = () => {
    if (!img.naturalWidth) return;
    const fitted = Math.min(view.clientWidth, (view.clientHeight * img.naturalWidth) / img.naturalHeight);
    img.style.width = `${Math.floor(fitted * scale)}px`;
  };
  img.addEventListener("load", apply);
  document.getElementById("image-btn").addEventListener("click", () => {
    if (!run) return;
    const kind = run.images.annotated ? "annotated" : "raw";
    img.src = `/api/runs/${encodeURIComponent(runId)}/images/${kind}`;
    scale = 1;
    apply();
    zoom.hidden = false;
  });
  document.getElementById("zoom-in").addEventListener("click", () => { scale = Math.min(scale * 1.5, 8); apply(); });
  document.getElementById("zoom-out").addEventListener("click", () => { scale = Math.max(scale / 1.5, 1); apply(); });
  document.getElementById("zoom-close").addEventListener("click", () => { zoom.hidden = true; });
  let drag = null;
  view.addEventListener("pointerdown", (ev) => { drag = { x: ev.clientX, y: ev.clientY, l: view.scrollLeft, t: view.scrollTop }; view.setPointerCapture(ev.pointerId); });
  view.addEventListener("pointermove", (ev) => {
    if (!drag) return;
    view.scrollLeft = drag.l - (ev.clientX - drag.x);
    view.scrollTop = drag.t - (ev.clientY - drag.y);
  });
  view.addEventListener("pointerup", () => { drag = null; });
  img.addEventListener("dragstart", (ev) => ev.preventDefault());

  if (new URLSearchParams(location.search).has("duplicate")) showBanner(t("progress.duplicate"), "info");
  load();
})();
