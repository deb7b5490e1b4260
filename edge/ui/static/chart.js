/* A bar chart of the endpoint distribution, drawn as inline SVG (no library). */
"use strict";
MP.drawDistribution = (container, distribution) => {
  const NS = "http://www.w3.org/2000/svg";
  const keys = Object.keys(distribution).filter((k) => /^\d+$/.test(k)).sort((a, b) => Number(a) - Number(b));
  const values = keys.map((k) => distribution[k]);
  const max = Math.max(1, ...values);
  const W = 520;
  const H = 300;
  const left = 44;
  const bottom = 40;
  const top = 32;
  const bw = (W - left - 8) / keys.length;
  const svg = document.createElementNS(NS, "svg");
  const add = (parent, tag, attrs, text) => {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, String(v));
    if (text !== undefined) node.textContent = String(text);
    parent.append(node);
    return node;
  };
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  svg.setAttribute("role", "img");
  svg.setAttribute("class", "dist-chart");
  svg.setAttribute("aria-label", `${MP.t("sample.distribution")}: ${keys.map((k, i) => `${k}=${values[i]}`).join(", ")}`);
  const step = max <= 5 ? 1 : Math.ceil(max / 5);
  for (let v = 0; v <= max; v += step) {
    const y = H - bottom - ((H - bottom - top) * v) / max;
    add(svg, "line", { x1: left, x2: W - 4, y1: y, y2: y, class: "gridline" });
    add(svg, "text", { x: left - 8, y: y + 7, "text-anchor": "end", class: "axis" }, v);
  }
  keys.forEach((k, i) => {
    const h = ((H - bottom - top) * values[i]) / max;
    const x = left + i * bw + bw * 0.15;
    const bar = add(svg, "rect", { x, y: H - bottom - h, width: bw * 0.7, height: Math.max(h, 0), class: "bar", "data-col": k });
    add(bar, "title", {}, `${MP.t("sample.column")} ${k}: ${values[i]} ${MP.t("sample.rows")}`);
    if (values[i] > 0) add(svg, "text", { x: x + bw * 0.35, y: H - bottom - h - 7, "text-anchor": "middle", class: "value" }, values[i]);
    add(svg, "text", { x: x + bw * 0.35, y: H - bottom + 26, "text-anchor": "middle", class: "axis" }, k);
  });
  container.replaceChildren(svg);
};
