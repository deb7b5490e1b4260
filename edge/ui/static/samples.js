/* Samples: history with search, kept live. */
"use strict";
(() => {
  const { t, el, api, showError, onEvent, when, num, csvState } = MP;
  const list = document.getElementById("sample-list");
  const more = document.getElementById("more");
  const input = document.getElementById("search");
  const PAGE = 20;
  let shown = 0;
  let timer = null;

  function item(s) {
    const stats = s.statistics || {};
    return el("li", {}, el("a", { class: "row-link", href: `/ui/samples/${encodeURIComponent(s.sample_number)}`, "data-sample": s.sample_number },
      el("span", { class: "sample-no", text: s.sample_number }),
      el("span", { class: "cell", text: `${t("samples.plates")}: ${s.plates}` }),
      el("span", { class: "cell", text: `${t("stat.gmt")}: ${num(stats.gmt, 1)}` }),
      el("span", { class: "cell meta", text: csvState(s.csv) }),
      el("span", { class: "cell meta", text: when(s.updated_at) })));
  }

  async function load(append) {
    const q = input.value.trim();
    const offset = append ? shown : 0;
    const params = new URLSearchParams({ limit: String(PAGE), offset: String(offset) });
    if (q) params.set("query", q);
    let page;
    try { page = await api("GET", `/api/samples?${params}`); } catch (err) { showError(err); return; }
    if (!append) list.replaceChildren();
    list.append(...page.items.map(item));
    shown = offset + page.items.length;
    more.hidden = shown >= page.total;
    document.getElementById("samples-empty").hidden = page.total > 0;
  }

  document.getElementById("search-form").addEventListener("submit", (ev) => { ev.preventDefault(); load(false); });
  input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(() => load(false), 250); });
  more.addEventListener("click", () => load(true));
  onEvent((ev) => {
    if (["hello", "events.dropped", "sample.updated", "run.created", "run.deleted"].includes(ev.type)) {
      clearTimeout(timer);
      timer = setTimeout(() => load(false), 150);
    }
  });
  load(false);
})();
