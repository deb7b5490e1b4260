// Interactive charts: uPlot (vendored, MIT, static/vendor/uplot) over the JSON series of
// /ui/charts/*.json. Each figure[data-chart-src] keeps its server-drawn fallback until the data
// is here; then the fallback is hidden and the chart shows hover values in its legend, zooms
// on a horizontal drag (double-click resets) and switches a series on and off when its legend
// entry is clicked. The chart follows its box's width (phones included).
(function () {
  "use strict";
  if (!window.uPlot || !window.fetch) { return; }
  var COLOURS = ["#0b5cad", "#c05000", "#1d7a3a", "#7b3fa0", "#a11a1a", "#44515e"];
  var HEIGHT = 260;

  function formatter(kind) {
    return function (u, v) {
      if (v == null) { return "–"; }
      if (kind === "pct") { return (v * 100).toFixed(1) + " %"; }
      if (kind === "int") { return String(Math.round(v)); }
      return v.toFixed(2);
    };
  }

  // A share with the counts behind it ("33.3 % (1 of 3)") where the series carries them:
  // held of reads (review share) or corrected of wells (field accuracy).
  function counted(fmt, s) {
    var part = s.held || s.corrected, whole = s.reads || s.wells;
    if (!part || !whole) { return fmt; }
    return function (u, v, si, i) {
      var text = fmt(u, v);
      if (i == null || whole[i] == null) { return text; }
      return text + " (" + part[i] + " of " + whole[i] + ")";
    };
  }

  function draw(figure, body) {
    var key = figure.getAttribute("data-chart-key");
    var kind = figure.getAttribute("data-chart-fmt") || "num";
    var series = body[key] || [];
    var box = figure.querySelector(".chart-plot");
    if (!box || !series.length || !body.x.length) {
      figure.setAttribute("data-chart-state", "empty");
      return;
    }
    var labels = body.labels;
    var width = function () { return Math.max(240, box.clientWidth); };
    var opts = {
      width: width(),
      height: HEIGHT,
      scales: {
        x: { time: true },
        // A share starts at 0; all zeros draw as 0-1 %, not uPlot's default 0-100 (10000 %).
        y: kind === "pct"
          ? { range: function (u, min, max) { return [0, max > 0 ? max * 1.1 : 0.01]; } }
          : {}
      },
      cursor: { drag: { x: true, y: false } },
      series: [{
        label: figure.getAttribute("data-chart-x") || (key === "series" ? "Day" : "Week"),
        value: function (u, v, s, i) { return i == null ? "–" : labels[i]; }
      }].concat(series.map(function (s, i) {
        return {
          label: s.name,
          stroke: COLOURS[i % COLOURS.length],
          width: 2,
          spanGaps: true,
          points: { show: true, size: 6 },
          value: counted(formatter(kind), s)
        };
      })),
      axes: [{}, {
        size: 56,
        // Whole plates: no 0.5 ticks.
        incrs: kind === "int" ? [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000, 10000] : undefined,
        values: function (u, ticks) {
          // Ticks under one per cent apart (small shares) get a decimal, so no two read alike.
          var step = ticks.length > 1 ? Math.abs(ticks[1] - ticks[0]) * 100 : 1;
          var digits = step < 1 ? 1 : 0;
          return ticks.map(function (v) { return kind === "pct" ? (v * 100).toFixed(digits) + " %" : v; });
        }
      }]
    };
    var data = [body.x].concat(series.map(function (s) { return s.values; }));
    box.removeAttribute("aria-hidden");
    var plot = new window.uPlot(opts, data, box);
    var fallback = figure.querySelector(".chart-fallback");
    if (fallback) { fallback.hidden = true; }
    figure.setAttribute("data-chart-state", "ready");
    figure.uplot = plot;  // for the browser tests (scale after a zoom)
    if (window.ResizeObserver) {
      var last = opts.width;
      new window.ResizeObserver(function () {
        var w = width();
        if (w !== last) { last = w; plot.setSize({ width: w, height: HEIGHT }); }
      }).observe(box);
    }
  }

  var figures = document.querySelectorAll("figure[data-chart-src]");
  var cache = {};
  Array.prototype.forEach.call(figures, function (figure) {
    var src = figure.getAttribute("data-chart-src");
    // Both trend charts read one document: fetch it once.
    cache[src] = cache[src] || fetch(src, { credentials: "same-origin" })
      .then(function (r) { return r.ok ? r.json() : Promise.reject(r.status); });
    cache[src]
      .then(function (body) { draw(figure, body); })
      .catch(function () { figure.setAttribute("data-chart-state", "failed"); });
  });
})();
