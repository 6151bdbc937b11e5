/* DigitServe charts: small SVG figures drawn by the page (no library, no canvas).
 *
 * Each function returns a <figure> holding an <svg role="img"> with a title and a
 * description, a <title> tooltip on every mark, and the same numbers as a table
 * in a <details> ("Show the numbers") for screen readers and keyboard users.
 * Colours come from CSS variables (--chart-1, --chart-2, --heat), so dark mode works.
 */
(() => {
  "use strict";

  const NS = "http://www.w3.org/2000/svg";
  const W = 360;          // viewBox width; the SVG scales to its container (text stays legible on a phone)
  const H = 210;
  const M = { top: 12, right: 12, bottom: 40, left: 50 };
  let uid = 0;

  function svgEl(tag, attrs = {}, text) {
    const el = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
    if (text !== undefined) el.textContent = text;
    return el;
  }

  function tip(el, text) {
    el.append(svgEl("title", {}, text));
    return el;
  }

  /** The <svg> frame: role img, labelled by a <title> and described by a <desc>. */
  function frame(title, description, height = H) {
    const id = `chart-${++uid}`;
    const svg = svgEl("svg", {
      viewBox: `0 0 ${W} ${height}`, role: "img", class: "chart", "aria-labelledby": `${id}-t ${id}-d`,
    });
    svg.append(svgEl("title", { id: `${id}-t` }, title), svgEl("desc", { id: `${id}-d` }, description));
    return svg;
  }

  function table(headers, rows, caption) {
    const t = document.createElement("table");
    t.className = "data-table";
    const cap = document.createElement("caption");
    cap.className = "visually-hidden";
    cap.textContent = caption;
    const head = document.createElement("tr");
    for (const h of headers) {
      const th = document.createElement("th");
      th.scope = "col";
      th.textContent = h;
      head.append(th);
    }
    const thead = document.createElement("thead");
    thead.append(head);
    const tbody = document.createElement("tbody");
    for (const row of rows) {
      const tr = document.createElement("tr");
      row.forEach((cell, i) => {
        const td = document.createElement(i === 0 ? "th" : "td");
        if (i === 0) td.scope = "row";
        td.textContent = cell;
        tr.append(td);
      });
      tbody.append(tr);
    }
    t.append(cap, thead, tbody);
    return t;
  }

  /** A figure: caption, the chart, an optional legend, and the numbers behind a disclosure. */
  function figure(caption, svg, legendItems, dataTable, testid) {
    const fig = document.createElement("figure");
    fig.className = "chart-figure";
    if (testid) fig.dataset.testid = testid;
    const cap = document.createElement("figcaption");
    cap.className = "chart-caption";
    cap.textContent = caption;
    fig.append(cap, svg);
    if (legendItems && legendItems.length) {
      const legend = document.createElement("ul");
      legend.className = "chart-legend small";
      legend.setAttribute("aria-hidden", "true");   // the table and the SVG's title say it already
      for (const { name, cls } of legendItems) {
        const li = document.createElement("li");
        const swatch = document.createElement("span");
        swatch.className = `swatch ${cls}`;
        li.append(swatch, document.createTextNode(name));
        legend.append(li);
      }
      fig.append(legend);
    }
    const details = document.createElement("details");
    details.className = "chart-data small";
    const summary = document.createElement("summary");
    summary.textContent = "Show the numbers";
    details.append(summary, dataTable);
    fig.append(details);
    return fig;
  }

  /** A step of 1, 2 or 5 times a power of ten, about (hi - lo) / count. */
  function niceStep(span, count) {
    const raw = span / count;
    const power = 10 ** Math.floor(Math.log10(raw));
    const unit = raw / power;
    return (unit <= 1 ? 1 : unit <= 2 ? 2 : unit <= 5 ? 5 : 10) * power;
  }

  /** [lo, hi, step]: the data's range widened to round ticks; `min`/`max` pin an end (e.g. accuracy at 1). */
  function niceRange(values, { min, max } = {}) {
    const finite = values.filter(Number.isFinite);
    let lo = min !== undefined ? min : (finite.length ? Math.min(...finite) : 0);
    let hi = max !== undefined ? max : (finite.length ? Math.max(...finite) : 1);
    if (hi <= lo) hi = lo + 1;
    const step = niceStep(hi - lo, 4);
    if (min === undefined) lo = Math.floor(lo / step) * step;
    if (max === undefined) hi = Math.ceil(hi / step) * step;
    return [lo, hi, step];
  }

  function ticks(lo, hi, step) {
    const out = [];
    for (let v = hi; v >= lo - step * 1e-6; v -= step) out.push(Math.round(v / step) * step);
    return out.reverse();
  }

  function axes(svg, { x0, x1, y0, y1, yTicks, yFormat, xLabel, yLabel, xTicks }) {
    const g = svgEl("g", { class: "axes" });
    for (const t of yTicks) {
      const y = t.y;
      g.append(svgEl("line", { x1: x0, x2: x1, y1: y, y2: y, class: "grid" }));
      g.append(svgEl("text", { x: x0 - 6, y: y + 4, "text-anchor": "end", class: "tick" }, yFormat(t.value)));
    }
    g.append(svgEl("line", { x1: x0, x2: x0, y1: y0, y2: y1, class: "axis" }));
    g.append(svgEl("line", { x1: x0, x2: x1, y1: y1, y2: y1, class: "axis" }));
    for (const t of xTicks) {
      g.append(svgEl("text", { x: t.x, y: y1 + 15, "text-anchor": "middle", class: "tick" }, t.label));
    }
    g.append(svgEl("text", { x: (x0 + x1) / 2, y: y1 + 32, "text-anchor": "middle", class: "axis-label" }, xLabel));
    const yl = svgEl("text", { x: 0, y: 0, "text-anchor": "middle", class: "axis-label",
      transform: `translate(11 ${(y0 + y1) / 2}) rotate(-90)` }, yLabel);
    g.append(yl);
    svg.append(g);
  }

  /**
   * Line chart of per-epoch (or per-`xLabel`) series: [{name, values, cls}]. `format` shows a value; `min`/`max`
   * fix the y range.
   */
  function lineChart({ title, series, xLabel = "epoch", yLabel, format = (v) => v.toFixed(3), tickFormat, min, max,
    testid }) {
    const n = Math.max(...series.map((s) => s.values.length));
    const all = series.flatMap((s) => s.values);
    const [lo, hi, step] = niceRange(all, { min, max });
    const x0 = M.left, x1 = W - M.right, y0 = M.top, y1 = H - M.bottom;
    const sx = (i) => (n <= 1 ? (x0 + x1) / 2 : x0 + (i / (n - 1)) * (x1 - x0));
    const sy = (v) => y1 - ((v - lo) / (hi - lo)) * (y1 - y0);
    const last = series.map((s) => `${s.name} ${s.values.length ? format(s.values[s.values.length - 1]) : "–"}`);
    const svg = frame(title, `${n} ${xLabel}s. Last ${xLabel}: ${last.join(", ")}.`);
    const every = Math.max(1, Math.ceil(n / 10));
    axes(svg, {
      x0, x1, y0, y1, xLabel, yLabel,
      yTicks: ticks(lo, hi, step).map((value) => ({ value, y: sy(value) })), yFormat: tickFormat || format,
      xTicks: Array.from({ length: n }, (_, i) => i).filter((i) => i % every === 0 || i === n - 1)
        .map((i) => ({ x: sx(i), label: String(i + 1) })),
    });
    for (const s of series) {
      const g = svgEl("g", { class: `series ${s.cls}` });
      const points = s.values.map((v, i) => `${sx(i).toFixed(1)},${sy(v).toFixed(1)}`).join(" ");
      g.append(svgEl("polyline", { points, class: "line" }));
      s.values.forEach((v, i) => {
        g.append(tip(svgEl("circle", { cx: sx(i).toFixed(1), cy: sy(v).toFixed(1), r: n > 30 ? 2 : 3, class: "dot" }),
          `${xLabel} ${i + 1}: ${s.name} ${format(v)}`));
      });
      svg.append(g);
    }
    const rows = Array.from({ length: n }, (_, i) => [String(i + 1), ...series.map((s) =>
      (Number.isFinite(s.values[i]) ? format(s.values[i]) : "–"))]);
    return figure(title, svg, series, table([xLabel, ...series.map((s) => s.name)], rows, title), testid);
  }

  /** Confusion matrix heat map: rows are the true digit, columns the predicted one; shade by share of the row. */
  function heatmap({ title, matrix, testid }) {
    const size = matrix.length;
    const side = 300;
    const left = 44, top = 10, bottom = 40;
    const cell = (side - left - 8) / size;
    const height = top + cell * size + bottom;
    const svg = frame(title, `Rows: true digit; columns: the network's answer. ${
      matrix.reduce((a, row, i) => a + (row[i] || 0), 0)} of ${
      matrix.flat().reduce((a, b) => a + b, 0)} test digits on the diagonal (right).`, height);
    svg.setAttribute("viewBox", `0 0 ${side} ${height}`);
    svg.classList.add("heatmap");
    for (let r = 0; r < size; r++) {
      const total = matrix[r].reduce((a, b) => a + b, 0) || 1;
      for (let c = 0; c < size; c++) {
        const v = matrix[r][c] || 0;
        const share = v / total;
        // a square root lifts the rare mistakes into view next to the large diagonal
        const shade = v ? 0.08 + 0.92 * Math.sqrt(share) : 0;
        const x = left + c * cell, y = top + r * cell;
        const g = svgEl("g", { class: `cell${r === c ? " diagonal" : ""}${shade > 0.55 ? " strong" : ""}` });
        g.append(tip(svgEl("rect", { x: x.toFixed(1), y: y.toFixed(1), width: (cell - 1).toFixed(1),
          height: (cell - 1).toFixed(1), rx: 2, "fill-opacity": shade.toFixed(3), class: "heat" }),
        `true ${r}, answered ${c}: ${v} (${(share * 100).toFixed(1)} % of the ${r}s)`));
        if (v) {
          g.append(svgEl("text", { x: (x + cell / 2).toFixed(1), y: (y + cell / 2 + 3).toFixed(1),
            "text-anchor": "middle", class: "cell-text", "aria-hidden": "true" }, v >= 1000 ? `${(v / 1000).toFixed(1)}k` : String(v)));
        }
        svg.append(g);
      }
      svg.append(svgEl("text", { x: left - 6, y: (top + r * cell + cell / 2 + 4).toFixed(1), "text-anchor": "end",
        class: "tick" }, String(r)));
    }
    for (let c = 0; c < size; c++) {
      svg.append(svgEl("text", { x: (left + c * cell + cell / 2).toFixed(1), y: (top + size * cell + 14).toFixed(1),
        "text-anchor": "middle", class: "tick" }, String(c)));
    }
    svg.append(svgEl("text", { x: left + (size * cell) / 2, y: top + size * cell + 32, "text-anchor": "middle",
      class: "axis-label" }, "answered"));
    svg.append(svgEl("text", { x: 0, y: 0, "text-anchor": "middle", class: "axis-label",
      transform: `translate(11 ${top + (size * cell) / 2}) rotate(-90)` }, "true digit"));
    const rows = matrix.map((row, r) => [String(r), ...row.map(String)]);
    const headers = ["true \\ answered", ...matrix.map((_, c) => String(c))];
    return figure(title, svg, null, table(headers, rows, title), testid);
  }

  /** Grouped bars per category: series [{name, values, cls}], values in [0, 1] shown as percentages. */
  function groupedBars({ title, categories, series, xLabel, yLabel, testid }) {
    const all = series.flatMap((s) => s.values).filter(Number.isFinite);
    // zoom in on the top when every bar is high, and say so on the axis
    const floor = all.length && Math.min(...all) > 0.5 ? Math.max(0, Math.floor(Math.min(...all) * 20) / 20 - 0.05) : 0;
    const lo = floor, hi = 1;
    const x0 = M.left, x1 = W - M.right, y0 = M.top, y1 = H - M.bottom;
    const group = (x1 - x0) / categories.length;
    const bar = (group * 0.8) / series.length;
    const sy = (v) => y1 - ((Math.max(lo, v) - lo) / (hi - lo)) * (y1 - y0);
    const fmt = (v) => `${(v * 100).toFixed(1)} %`;
    const lowest = series.map((s) => {
      let i = 0;
      s.values.forEach((v, j) => { if (v < s.values[i]) i = j; });
      return `lowest ${s.name} ${fmt(s.values[i])} for ${categories[i]}`;
    });
    const svg = frame(title, `${lowest.join("; ")}.${lo > 0 ? ` The axis starts at ${fmt(lo)}.` : ""}`);
    axes(svg, {
      x0, x1, y0, y1, xLabel, yLabel: lo > 0 ? `${yLabel} (from ${Math.round(lo * 100)} %)` : yLabel,
      yTicks: ticks(lo, hi, niceStep(hi - lo, 4)).map((value) => ({ value, y: sy(value) })),
      yFormat: (v) => `${Math.round(v * 1000) / 10}`,
      xTicks: categories.map((c, i) => ({ x: x0 + group * (i + 0.5), label: String(c) })),
    });
    series.forEach((s, k) => {
      const g = svgEl("g", { class: `series ${s.cls}` });
      s.values.forEach((v, i) => {
        const x = x0 + group * i + group * 0.1 + bar * k;
        const y = sy(v);
        g.append(tip(svgEl("rect", { x: x.toFixed(1), y: y.toFixed(1), width: Math.max(1, bar - 1).toFixed(1),
          height: Math.max(0, y1 - y).toFixed(1), class: "bar" }), `${categories[i]}: ${s.name} ${fmt(v)}`));
      });
      svg.append(g);
    });
    const rows = categories.map((c, i) => [String(c), ...series.map((s) => fmt(s.values[i]))]);
    return figure(title, svg, series, table([xLabel, ...series.map((s) => s.name)], rows, title), testid);
  }

  window.DSCharts = { lineChart, heatmap, groupedBars, table };
})();
