/* Review queue: runs held for review first, then runs with rows left unread; kept live. */
"use strict";
(() => {
  const { t, el, api, showError, onEvent, when } = MP;
  const list = document.getElementById("queue");
  let timer = null;

  function item(r) {
    const why = r.needs_review
      ? (r.review_reasons || []).map((x) => t(`review.${x}`)).join("; ")
      : t("rv.unread_rows", { n: r.unread_rows });
    return el("li", {}, el("a", {
      class: "row-link", href: `/ui/review/${encodeURIComponent(r.run_id)}`, "data-run": r.run_id,
    },
      el("span", { class: "sample-no", text: r.sample_number }),
      el("span", { class: `chip ${r.needs_review ? "needs_review" : "current"}`,
        text: r.needs_review ? t("status.needs_review") : t("rv.unread") }),
      el("span", { class: "cell meta", text: why }),
      el("span", { class: "cell meta", text: when(r.processed_at) })));
  }

  async function load() {
    let items;
    try { items = await api("GET", "/api/review-queue?limit=100"); } catch (err) { showError(err); return; }
    list.replaceChildren(...items.map(item));
    document.getElementById("queue-empty").hidden = items.length > 0;
  }

  onEvent((ev) => {
    if (["hello", "events.dropped", "run.created", "run.updated", "run.deleted"].includes(ev.type)) {
      clearTimeout(timer);
      timer = setTimeout(load, 150);
    }
  });
  load();
})();
