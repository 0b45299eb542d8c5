// Bar charts as inline SVG: one bar (or one stack of bars) per day, no library.
import { formatNumber, h } from "./dom.js";

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 480;
const HEIGHT = 180;
const PAD = { left: 44, right: 8, top: 10, bottom: 26 };

function svg(tag, attributes = {}, text) {
  const element = document.createElementNS(SVG, tag);
  for (const [name, value] of Object.entries(attributes)) element.setAttribute(name, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

// series: [{name, className, values: [number per day]}], stacked in order; days: ["2026-12-07", ...].
export function stackedBarChart({ title, days, series }) {
  const totals = days.map((_, i) => series.reduce((sum, s) => sum + (s.values[i] || 0), 0));
  const max = Math.max(1, ...totals);
  const plotWidth = WIDTH - PAD.left - PAD.right;
  const plotHeight = HEIGHT - PAD.top - PAD.bottom;
  const slot = plotWidth / Math.max(1, days.length);
  const barWidth = Math.max(2, Math.min(28, slot * 0.7));
  const grandTotal = totals.reduce((a, b) => a + b, 0);
  const summary = `${title}: ${formatNumber(grandTotal)} over ${days.length} day(s)`;
  const chart = svg("svg", { viewBox: `0 0 ${WIDTH} ${HEIGHT}`, role: "img", "aria-label": summary });
  chart.append(svg("title", {}, summary));
  chart.append(svg("line", { class: "axis", x1: PAD.left, y1: HEIGHT - PAD.bottom, x2: WIDTH - PAD.right, y2: HEIGHT - PAD.bottom }));
  chart.append(svg("text", { x: PAD.left - 4, y: PAD.top + 8, "text-anchor": "end" }, formatNumber(max)));
  chart.append(svg("text", { x: PAD.left - 4, y: HEIGHT - PAD.bottom, "text-anchor": "end" }, "0"));
  days.forEach((day, i) => {
    const x = PAD.left + slot * i + (slot - barWidth) / 2;
    let y = HEIGHT - PAD.bottom;
    for (const s of series) {
      const value = s.values[i] || 0;
      const height = (value / max) * plotHeight;
      if (height > 0) {
        y -= height;
        const bar = svg("rect", { class: s.className, x, y, width: barWidth, height });
        bar.append(svg("title", {}, `${day} ${s.name}: ${formatNumber(value)}`));
        chart.append(bar);
      }
    }
    // Label the first, the last and a few between, so that labels never overlap.
    const every = Math.ceil(days.length / 6);
    if (i % every === 0 || i === days.length - 1) {
      chart.append(svg("text", { x: x + barWidth / 2, y: HEIGHT - 8, "text-anchor": "middle" }, day.slice(5)));
    }
  });
  const legend = h("ul", { class: "legend" },
    series.map((s) => h("li", {}, h("span", { class: `swatch ${s.className.replace("bar-", "")}`, "aria-hidden": "true" }), s.name)));
  // A table is as tall as its rows whatever its height: the hiding box goes around it.
  const table = h("div", { class: "visually-hidden" }, h("table", {},
    h("caption", {}, title),
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Day"), series.map((s) => h("th", { scope: "col" }, s.name)))),
    h("tbody", {}, days.map((day, i) => h("tr", {}, h("th", { scope: "row" }, day), series.map((s) => h("td", {}, formatNumber(s.values[i] || 0))))))));
  return h("figure", { class: "chart", dataset: { total: String(grandTotal), chart: title } },
    h("figcaption", {}, h("strong", {}, title), ` (${formatNumber(grandTotal)})`), chart, legend, table);
}
