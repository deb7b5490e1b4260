/* Selectors whose element is missing or not fully inside the viewport. */
((sels) => sels.flatMap((s) => {
  const e = document.querySelector(s);
  if (!e) return ['missing: ' + s];
  const r = e.getBoundingClientRect();
  const inside = r.width > 0 && r.left >= -1 && r.top >= -1 && r.right <= innerWidth + 1 && r.bottom <= innerHeight + 1;
  return inside ? [] : ['off screen: ' + s + ' ' + JSON.stringify([r.left, r.top, r.right, r.bottom].map(Math.round))];
}))
