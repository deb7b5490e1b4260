/* Problems with the layout: sideways overflow and touch targets under the minimum. */
(([targets, touch]) => {
  const W = innerWidth, H = innerHeight, problems = [];
  const visible = (e) => { const r = e.getBoundingClientRect();
    return r.width > 0 && r.height > 0 && getComputedStyle(e).visibility !== 'hidden'; };
  const name = (e) => e.id ? '#' + e.id : e.tagName.toLowerCase() + '.' + e.className;
  if (document.scrollingElement.scrollWidth > W) problems.push('page scrolls sideways: ' + document.scrollingElement.scrollWidth);
  for (const e of document.body.querySelectorAll('*')) {
    if (!visible(e) || e.closest('.zoom-view, .rows-pane, svg')) continue;
    const r = e.getBoundingClientRect();
    if (r.right > W + 1 || r.left < -1) problems.push('too wide: ' + name(e) + ' ' + Math.round(r.left) + '..' + Math.round(r.right));
  }
  for (const e of document.querySelectorAll(targets)) {
    if (!visible(e) || e.closest('.rows-pane')) continue;
    const r = e.getBoundingClientRect();
    if (r.height < touch - 0.5 || r.width < touch - 0.5) problems.push('small target: ' + name(e) + ' ' + Math.round(r.width) + 'x' + Math.round(r.height));
  }
  return problems;
})
