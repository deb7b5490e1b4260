// Live updates and confirmations. Plain script, no framework, no third-party code.
(function () {
  "use strict";

  // Ask before destructive form posts (revoke). The server checks permissions regardless.
  document.addEventListener("submit", function (ev) {
    var msg = ev.target.getAttribute("data-confirm");
    if (msg && !window.confirm(msg)) { ev.preventDefault(); }
  });

  // On a phone the wide tables turn into cards (dashboard.css): each cell needs its column's
  // heading as a label. Done here so the templates stay plain tables.
  function labelCells(root) {
    var tables = root.querySelectorAll("table.grid");
    for (var t = 0; t < tables.length; t++) {
      var heads = tables[t].querySelectorAll("thead th");
      var rows = tables[t].querySelectorAll("tbody tr");
      for (var r = 0; r < rows.length; r++) {
        var cells = rows[r].children;
        for (var c = 0; c < cells.length && c < heads.length; c++) {
          var label = heads[c].textContent.trim();
          if (label && !cells[c].hasAttribute("colspan") && !cells[c].hasAttribute("data-label")) {
            cells[c].setAttribute("data-label", label);
          }
        }
      }
    }
  }
  labelCells(document);

  var live = document.getElementById("live");
  if (!live || !window.WebSocket) { return; }
  var mode = document.body.getAttribute("data-live");
  var pending = 0;
  var refreshing = false;
  var retry = 1000;

  function refreshOverview() {
    if (refreshing) { return; }
    refreshing = true;
    fetch("/ui/overview/fragment", { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) {
        var body = document.getElementById("overview-body");
        if (body) { body.innerHTML = html; labelCells(body); }
        live.hidden = false;
        live.textContent = "Updated " + new Date().toLocaleTimeString() + ".";
      })
      .catch(function () { /* the next event or a reload tries again */ })
      .then(function () { refreshing = false; });
  }

  function onEvent(data) {
    if (data.type === "hello") { return; }
    if (mode === "overview") { refreshOverview(); return; }
    pending += 1;
    live.hidden = false;
    live.textContent = "";
    var text = document.createTextNode(pending + " new update" + (pending === 1 ? "" : "s") + " since this page loaded. ");
    var link = document.createElement("a");
    link.href = window.location.href;
    link.textContent = "Reload";
    live.appendChild(text);
    live.appendChild(link);
  }

  function connect() {
    // Refresh the session cookies first: the socket itself cannot set them.
    fetch("/ui/ping", { credentials: "same-origin" }).then(function (r) {
      if (r.status === 401) { return; }
      var scheme = window.location.protocol === "https:" ? "wss://" : "ws://";
      var ws = new WebSocket(scheme + window.location.host + "/ui/events");
      ws.onopen = function () { retry = 1000; document.body.setAttribute("data-live-connected", "1"); };
      ws.onmessage = function (m) {
        try { onEvent(JSON.parse(m.data)); } catch (e) { /* ignore malformed */ }
      };
      ws.onclose = function () {
        document.body.removeAttribute("data-live-connected");
        setTimeout(connect, retry);
        retry = Math.min(retry * 2, 30000);
      };
    }).catch(function () { setTimeout(connect, retry); retry = Math.min(retry * 2, 30000); });
  }
  connect();
})();
