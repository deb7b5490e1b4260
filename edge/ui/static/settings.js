/* Settings (supervisor): template, dilution, thresholds, reading mode, language. Only changed fields are sent. */
"use strict";
(() => {
  const { t, el, api, showError, showBanner, hideBanner } = MP;
  const form = document.getElementById("settings-form");
  const toggles = [...document.querySelectorAll("#control-columns .toggle")];
  let current = null;

  function fill(s) {
    current = s;
    form.csv_template.value = s.csv_template;
    form.start_dilution.value = s.start_dilution;
    form.dilution_factor.value = s.dilution_factor;
    form.min_confidence.value = s.min_confidence;
    form.reading.value = s.reading;
    form.well_threshold.value = s.well_threshold;
    form.protective_titre.value = s.protective_titre ?? "";
    const lang = form.language;
    if (![...lang.options].some((o) => o.value === s.language)) lang.append(el("option", { value: s.language, text: s.language }));
    lang.value = s.language;
    for (const b of toggles) b.setAttribute("aria-pressed", String(s.control_columns.includes(Number(b.dataset.col))));
  }

  for (const b of toggles) {
    b.addEventListener("click", () => b.setAttribute("aria-pressed", String(b.getAttribute("aria-pressed") !== "true")));
  }

  function wanted() {
    const protective = form.protective_titre.value.trim();
    return {
      csv_template: form.csv_template.value,
      start_dilution: Number(form.start_dilution.value),
      dilution_factor: Number(form.dilution_factor.value),
      min_confidence: Number(form.min_confidence.value),
      reading: form.reading.value,
      well_threshold: Number(form.well_threshold.value),
      protective_titre: protective === "" ? null : Number(protective),
      language: form.language.value,
      control_columns: toggles.filter((b) => b.getAttribute("aria-pressed") === "true").map((b) => Number(b.dataset.col)),
    };
  }

  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    hideBanner();
    if (!form.reportValidity()) return;
    const next = wanted();
    const patch = {};
    for (const [k, v] of Object.entries(next)) {
      if (JSON.stringify(v) !== JSON.stringify(current[k])) patch[k] = v;
    }
    if (Object.keys(patch).length === 0) { showBanner(t("common.saved"), "info"); return; }
    try {
      fill(await api("PATCH", "/api/settings", patch));
      showBanner(t("common.saved"), "info");
    } catch (err) {
      showError(err);
    }
  });

  api("GET", "/api/settings").then(fill, showError);
})();
