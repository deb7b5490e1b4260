/* Status: camera, model and backend, sync, disk, queue, version; refreshed live. */
"use strict";
(() => {
  const { t, api, showError, hideBanner, onEvent, age, bytes } = MP;
  const set = (id, text, cls) => {
    const node = document.getElementById(id);
    node.textContent = text;
    if (cls !== undefined) node.className = `big-value ${cls}`;
  };
  let sync = {};

  function renderSync() {
    const connected = sync.connected;
    // A reason other than "ok" wins over "connected": connected but refused is not working.
    const problem = sync.reason && sync.reason !== "ok" && sync.reason !== "connecting";
    const label = connected === undefined || connected === null ? t("common.unknown")
      : problem ? (connected ? t("status.sync_problem") : t("status.not_connected"))
      : connected ? t("status.connected") : t("status.not_connected");
    set("st-sync", label, problem ? "bad" : connected ? "good" : connected === false ? "bad" : "");
    const why = document.getElementById("st-sync-reason");
    why.hidden = !problem;
    // English: the appliance's own sentence (with the broker and the detail); other languages:
    // the translated sentence for the code, the English detail as a tooltip.
    const local = MP.boot.lang === "en" ? "" : t(`sync.reason.${sync.reason}`);
    const translated = local && local !== `sync.reason.${sync.reason}` ? local : "";
    why.textContent = problem ? translated || sync.message || sync.reason : "";
    why.title = problem && translated ? sync.message || "" : "";
    why.dataset.reason = sync.reason || "";
    set("st-backlog", `${t("status.backlog")}: ${sync.backlog ?? "—"} · ${t("status.oldest")}: ${age(sync.oldest_age_s)}`);
  }

  // Model updates: the model an update switched to, the one shadowing, or why updates are off.
  function renderOta(o) {
    const node = document.getElementById("st-ota");
    if (!o) { node.textContent = ""; return; }
    const parts = [];
    if (o.active) parts.push(`${t("status.ota_active")}: ${o.active.name} ${o.active.version}`);
    if (o.shadow) {
      const agree = o.shadow.agreement === null ? "—" : `${(o.shadow.agreement * 100).toFixed(1)} %`;
      parts.push(`${t("status.ota_shadow")}: ${o.shadow.name} ${o.shadow.version} (${o.shadow.plates} / ${o.shadow.of}, ${t("status.ota_agreement")} ${agree})`);
    }
    if (o.last && !o.shadow) parts.push(`${t("status.ota_last")}: ${o.last.version} ${o.last.state}${o.last.reason ? ` (${o.last.reason})` : ""}`);
    if (o.disabled) parts.push(`${t("status.ota_off")}: ${o.disabled}`);
    node.textContent = parts.join(" · ");
    node.dataset.shadow = o.shadow ? o.shadow.version : "";
    node.dataset.active = o.active ? o.active.version : "";
  }

  async function load() {
    let s;
    try { s = await api("GET", "/api/status"); } catch (err) { showError(err); return; }
    hideBanner();
    set("st-camera", t(`status.cam.${s.camera.state}`), s.camera.state === "ok" ? "good" : s.camera.state === "unavailable" ? "bad" : "");
    set("st-camera-detail", [s.camera.source, s.camera.detail].filter(Boolean).join(" · "));
    set("st-model", s.model.loaded ? t("status.model_loaded") : t("status.model_not_loaded"), s.model.loaded ? "good" : "bad");
    const c = s.classifier;
    set("st-backend", [`${t("status.backend")}: ${s.model.backend || "—"}`, [s.model.name, s.model.version].filter(Boolean).join(" "), s.model.detail,
      c ? `${t("status.classifier")}: ${c.name} ${c.version} (${c.backend} ${c.precision})` : null].filter(Boolean).join(" · "));
    renderOta(s.ota);
    sync = { ...s.sync, ...(sync.fromEvent ? sync : {}) };
    renderSync();
    set("st-disk", t("status.free", { free: bytes(s.disk.free_bytes), total: bytes(s.disk.total_bytes) }), s.disk.ok ? "good" : "bad");
    set("st-disk-detail", s.disk.ok ? s.disk.path : t("status.low_disk", { floor: bytes(s.disk.floor_bytes) }));
    set("st-queue", `${s.queue.depth} / ${s.queue.capacity}`);
    set("st-calibration", `${t("status.calibration")}: ${s.calibration_id ? s.calibration_id.slice(0, 8) : t("common.none")}`);
    set("st-version", s.version);
    set("st-device", `${t("status.device")}: ${s.site_id} / ${s.device_id} · ${s.mode}`);
  }

  onEvent((ev) => {
    if (ev.type === "sync.status") {
      sync = { ...sync, ...ev.payload, fromEvent: true };
      renderSync();
    } else if (ev.type === "ota.status") {
      renderOta(ev.payload);
    } else if (ev.type === "hello" || ev.type === "events.dropped" || ev.type === "calibration.updated") {
      load();
    }
  });
  load();
  setInterval(load, 10000);
})();
