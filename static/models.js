/* DigitServe models dashboard: every model and version, its training record as charts, and
 * (for administrators) activating or rolling back a version.
 *
 * A version's details are a list of panels. Each panel is {id, title, render(version, model)}
 * returning a DOM node, or null when the version has nothing to show for it; another script adds
 * one with DSModels.addPanel(panel) (before or after this one's own), at the end or, with
 * `before: "curves"`, ahead of the panel with that id.
 */
(() => {
  "use strict";

  const ds = window.DigitServe;
  const charts = window.DSCharts;
  const $ = (sel) => document.querySelector(sel);

  const view = { models: [], selected: null, request: 0, activating: null };
  const panels = [];
  const cardActions = [];   // {render(model)} -> a button (or null) in each model card's heading

  function addPanel(panel) {
    const at = panel.before ? panels.findIndex((p) => p.id === panel.before) : -1;
    if (at >= 0) panels.splice(at, 0, panel);
    else panels.push(panel);
    if (view.selected) showVersion(view.selected.model, view.selected.version, false);
  }

  /** Another script's button in every model card's heading, e.g. "Retrain…" (static/improve.js). */
  function addCardAction(action) {
    cardActions.push(action);
    if (view.models.length) render();
  }

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else if (k.startsWith("data-")) node.setAttribute(k, v);
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c != null) node.append(c);
    return node;
  }

  const pct = (v, digits = 2) => (typeof v === "number" ? `${(v * 100).toFixed(digits)} %` : "–");

  function duration(seconds) {
    if (typeof seconds !== "number") return "–";
    if (seconds < 90) return `${seconds.toFixed(seconds < 10 ? 1 : 0)} s`;
    const m = Math.floor(seconds / 60);
    return m < 90 ? `${m} min ${Math.round(seconds % 60)} s` : `${(seconds / 3600).toFixed(1)} h`;
  }

  function feedbackText(f) {
    if (!f || !f.labelled) return "no labels yet";
    return `${pct(f.accuracy, 1)} of ${f.labelled}`;
  }

  /* -------------------------------------------------------------- loading */

  async function load() {
    const mine = ++view.request;
    const box = $("#models");
    box.setAttribute("aria-busy", "true");
    $("#models-status").textContent = "Loading models…";
    ds.hideInline("#models-error");
    try {
      const { data } = await ds.api("GET", "/models");
      const names = ((data && data.models) || []).map((m) => m.name);
      const details = await Promise.all(names.map((n) => ds.api("GET", `/models/${encodeURIComponent(n)}`)));
      if (mine !== view.request || !ds.user()) return;
      view.models = details.map((d) => d.data);
      render();
      const keep = view.selected && find(view.selected.model, view.selected.version);
      const first = view.models.find((m) => m.active_version != null) || view.models[0];
      if (keep) showVersion(view.selected.model, view.selected.version, false);
      else if (first) showVersion(first.name, first.active_version != null ? first.active_version
        : first.versions[first.versions.length - 1].version, false);
      else $("#version-detail").hidden = true;
      $("#models-status").textContent = "";
    } catch (err) {
      if (mine !== view.request) return;
      $("#models-status").textContent = "";
      ds.handleError(err, "#models-error");
    } finally {
      if (mine === view.request) box.setAttribute("aria-busy", "false");
    }
  }

  function find(name, version) {
    const model = view.models.find((m) => m.name === name);
    const v = model && model.versions.find((x) => x.version === version);
    return v ? { model, version: v } : null;
  }

  /* ------------------------------------------------------------- the list */

  function render() {
    const box = $("#models");
    box.replaceChildren();
    $("#models-empty").hidden = view.models.length > 0;
    for (const m of view.models) box.append(modelCard(m));
  }

  function modelCard(m) {
    const card = el("section", { class: "model-card", "data-model": m.name, "data-testid": "model-card",
      "aria-labelledby": `model-${m.name}-title` });
    const active = m.active_version != null ? `active: v${m.active_version}` : "no active version";
    const heading = el("h2", { class: "subtitle model-name", id: `model-${m.name}-title` },
      document.createTextNode(m.name), el("span", { class: "model-active small", text: active }));
    const actions = cardActions.map((a) => a.render(m)).filter(Boolean);
    card.append(actions.length ? el("div", { class: "model-head" }, heading, el("div", { class: "model-actions" }, ...actions))
      : heading);
    const table = el("table", { class: "versions-table fold-table" });
    table.append(el("caption", { class: "visually-hidden", text: `Versions of ${m.name}` }));
    const head = el("tr");
    for (const [h, optional] of [["Version"], ["Family", 1], ["Architecture", 1], ["Test accuracy"],
      ["On users' labels"], ["Training"], ["Trained", 1], ["Status"], ["", 0]]) {
      head.append(el("th", { scope: "col", text: h, class: optional ? "col-optional" : "" }));
    }
    table.append(el("thead", {}, head));
    const body = el("tbody");
    const versions = m.versions.slice().sort((a, b) => b.version - a.version);
    for (const v of versions) body.append(versionRow(m, v));
    table.append(body);
    card.append(el("div", { class: "table-scroll" }, table));
    return card;
  }

  function versionRow(m, v) {
    const row = el("tr", { "data-version": String(v.version), "data-testid": "version-row",
      class: v.active ? "is-active" : "" });
    row.append(el("th", { scope: "row", text: `v${v.version}` }));
    row.append(el("td", { class: "col-optional", "data-label": "Family", text: v.family }));
    // the network itself; how it was trained is in the details
    const arch = (v.architecture || "–").split(";")[0];
    row.append(el("td", { class: "architecture col-optional", text: arch, title: v.architecture || "" }));
    row.append(el("td", { class: "num", "data-label": "Test accuracy", text: pct(v.test_accuracy) }));
    row.append(el("td", { class: "num", "data-label": "On users' labels", "data-testid": "feedback-accuracy",
      text: feedbackText(v.feedback) }));
    row.append(el("td", { class: "num", "data-label": "Training", text: duration(v.train_seconds) }));
    row.append(el("td", { class: "col-optional", "data-label": "Trained", text: ds.absoluteTime(v.created_at) }));
    const status = el("td", { "data-label": "Status" });
    status.append(el("span", { class: `model-state ${v.active ? "is-active" : ""}`, "data-testid": "version-state",
      text: v.active ? "active" : "inactive" }));
    row.append(status);
    const actions = el("td", { class: "actions" });
    const details = el("button", { type: "button", class: "button small", "data-testid": "version-details",
      "aria-label": `Details of ${m.name} version ${v.version}`, text: "Details" });
    details.addEventListener("click", () => showVersion(m.name, v.version, true));
    actions.append(details);
    if (ds.isAdmin() && !v.active) {
      const older = m.active_version != null && v.version < m.active_version;
      const label = older ? "Roll back…" : "Activate…";
      const activate = el("button", { type: "button", class: "button small button-primary-ghost",
        "data-testid": "version-activate", "aria-label": `${older ? "Roll back" : "Activate"} ${m.name} to version ${v.version}`,
        text: label });
      activate.addEventListener("click", () => askActivate(m, v, activate));
      actions.append(activate);
    }
    row.append(actions);
    return row;
  }

  /* ------------------------------------------------------ a version's panels */

  function showVersion(name, version, moveFocus) {
    const found = find(name, version);
    if (!found) return;
    view.selected = { model: name, version };
    for (const row of document.querySelectorAll("#models tr[data-version]")) {
      const mine = row.closest("[data-model]").dataset.model === name && row.dataset.version === String(version);
      row.classList.toggle("is-selected", mine);
      const button = row.querySelector("[data-testid=version-details]");
      if (button) button.setAttribute("aria-pressed", mine ? "true" : "false");
    }
    const section = $("#version-detail");
    section.hidden = false;
    section.dataset.model = name;
    section.dataset.version = String(version);
    const v = found.version;
    $("#version-title").textContent = `${name}:${version} — ${v.family}${v.active ? " (active)" : ""}`;
    const box = $("#version-panels");
    box.replaceChildren();
    for (const panel of panels) {
      let content = null;
      try {
        content = panel.render(v, found.model);
      } catch (err) {
        content = el("p", { class: "inline-error", text: `This panel could not be drawn: ${err.message}` });
      }
      if (!content) continue;
      const id = `panel-${panel.id}`;
      box.append(el("section", { class: "panel", "data-panel": panel.id, "aria-labelledby": id },
        el("h3", { class: "subtitle small-title", id, text: panel.title }), content));
    }
    if (moveFocus) {
      $("#version-title").focus({ preventScroll: true });
      section.scrollIntoView({ block: "start", behavior: "auto" });
    }
  }

  const none = (text) => el("p", { class: "muted small", text });

  addPanel({
    id: "summary", title: "Training record",
    render(v) {
      const hp = v.hyperparameters || {};
      const facts = el("dl", { class: "facts" });
      const fact = (k, val) => facts.append(el("dt", { text: k }), el("dd", { text: val }));
      fact("Architecture", v.architecture || "–");
      fact("Test accuracy", `${pct(v.test_accuracy)}${v.metrics && v.metrics.test_size ? ` of ${v.metrics.test_size} digits` : ""}`);
      if (v.metrics && typeof v.metrics.validation_accuracy === "number") fact("Best validation accuracy", pct(v.metrics.validation_accuracy));
      fact("Training time", duration(v.train_seconds));
      fact("Trained", ds.absoluteTime(v.created_at));
      fact("File", v.sha256 ? `sha256 ${v.sha256.slice(0, 16)}…` : "–");
      const rows = Object.entries(hp).filter(([k]) => k !== "architecture")
        .map(([k, val]) => [k, typeof val === "object" && val !== null ? JSON.stringify(val) : String(val)]);
      const wrap = el("div", { class: "summary-grid" }, facts);
      if (rows.length) {
        const t = charts.table(["hyper-parameter", "value"], rows, "Hyper-parameters");
        t.classList.add("hp-table");
        wrap.append(el("div", { class: "table-scroll" }, t));
      }
      return wrap;
    },
  });

  addPanel({
    id: "curves", title: "Training curves",
    render(v) {
      const c = v.curves || {};
      const has = (k) => Array.isArray(c[k]) && c[k].length;
      const figures = [];
      const loss = [["loss", "training", "series-1"], ["val_loss", "validation", "series-2"]].filter(([k]) => has(k));
      if (loss.length) {
        figures.push(charts.lineChart({ title: "Loss per epoch", yLabel: "loss", testid: "chart-loss",
          tickFormat: (x) => String(Math.round(x * 1000) / 1000),
          series: loss.map(([k, name, cls]) => ({ name, cls, values: c[k] })) }));
      }
      const acc = [["accuracy", "training", "series-1"], ["val_accuracy", "validation", "series-2"]].filter(([k]) => has(k));
      if (acc.length) {
        figures.push(charts.lineChart({ title: "Accuracy per epoch", yLabel: "accuracy (%)", testid: "chart-accuracy",
          format: (x) => `${(x * 100).toFixed(1)}`, tickFormat: (x) => String(Math.round(x * 1000) / 10), max: 1,
          series: acc.map(([k, name, cls]) => ({ name, cls, values: c[k] })) }));
      }
      const known = new Set(["loss", "val_loss", "accuracy", "val_accuracy"]);
      for (const [k, values] of Object.entries(c)) {   // e.g. a DBN's RBM pretraining curves
        if (known.has(k) || !Array.isArray(values) || !values.length || !values.every(Number.isFinite)) continue;
        figures.push(charts.lineChart({ title: k.replace(/_/g, " "), yLabel: k, series: [{ name: k, cls: "series-1", values }] }));
      }
      return figures.length ? el("div", { class: "chart-row" }, ...figures) : none("No curves were recorded for this version.");
    },
  });

  addPanel({
    id: "confusion", title: "Confusion matrix (test set)",
    render(v) {
      const m = v.confusion_matrix;
      if (!Array.isArray(m) || m.length !== 10) return none("No confusion matrix was recorded for this version.");
      return charts.heatmap({ title: "True digit against the network's answer", matrix: m, testid: "chart-confusion" });
    },
  });

  addPanel({
    id: "per-class", title: "Precision and recall per digit",
    render(v) {
      const per = v.metrics && Array.isArray(v.metrics.per_class) ? v.metrics.per_class : [];
      if (per.length !== 10) return none("No per-digit metrics were recorded for this version.");
      return charts.groupedBars({
        title: "Per digit, on the test set", xLabel: "digit", yLabel: "%", testid: "chart-per-class",
        categories: per.map((p) => p.digit),
        series: [{ name: "precision", cls: "series-1", values: per.map((p) => p.precision) },
          { name: "recall", cls: "series-2", values: per.map((p) => p.recall) }],
      });
    },
  });

  addPanel({
    id: "feedback", title: "On users' labels",
    render(v) {
      const f = v.feedback || {};
      if (!f.labelled) {
        return none("Nobody has labelled an answer of this version yet. Corrections and confirmations from "
          + "“Wrong? Correct it” (Predict and History) show up here.");
      }
      const p = el("p", { "data-testid": "feedback-summary" });
      p.textContent = `Right on ${f.agreed} of the ${f.labelled} digits people labelled: ${pct(f.accuracy, 1)}. `
        + "People mostly label the answers they find wrong, so this is lower than the test accuracy.";
      return p;
    },
  });

  /* ---------------------------------------------------- activate / roll back */

  function askActivate(m, v, button) {
    view.activating = { m, v, button };
    const current = m.active_version != null ? `v${m.active_version}` : "none";
    $("#activate-title").textContent = `Activate ${m.name}:${v.version}?`;
    $("#activate-text").textContent = `Every request for “${m.name}” will be answered by version ${v.version} `
      + `(${pct(v.test_accuracy)} on the test set) from now on; workers switch within seconds. `
      + `Active now: ${current}. You can switch back here at any time.`;
    $("#activate-confirm").textContent = m.active_version != null && v.version < m.active_version
      ? `Roll back to v${v.version}` : `Activate v${v.version}`;
    const dialog = $("#activate-dialog");
    dialog.returnValue = "";
    dialog.showModal();
  }

  async function onActivateClose() {
    const pending = view.activating;
    view.activating = null;
    if (!pending) return;
    if ($("#activate-dialog").returnValue !== "activate") {
      pending.button.focus();
      return;
    }
    ds.hideInline("#models-error");
    pending.button.disabled = true;
    pending.button.textContent = "Activating…";
    $("#models-status").textContent = `Activating ${pending.m.name}:${pending.v.version}…`;
    try {
      await ds.api("POST", `/models/${encodeURIComponent(pending.m.name)}/versions/${pending.v.version}/activate`);
      view.selected = { model: pending.m.name, version: pending.v.version };
      await load();
      $("#models-status").textContent = `${pending.m.name}:${pending.v.version} is now active.`;
      const row = document.querySelector(`#models [data-model="${CSS.escape(pending.m.name)}"] tr[data-version="${pending.v.version}"] [data-testid=version-details]`);
      if (row) row.focus();
    } catch (err) {
      pending.button.disabled = false;
      pending.button.textContent = "Activate…";
      $("#models-status").textContent = "";
      ds.handleError(err, "#models-error");
    }
  }

  /* --------------------------------------------------------------- wiring */

  ds.registerView("models", {
    selector: "#models-view", title: "Models", heading: "#models-title",
    show: (changed) => { if (changed) load(); },
    signOut: () => {
      view.request += 1;
      view.models = [];
      view.selected = null;
      $("#models").replaceChildren();
      $("#version-panels").replaceChildren();
      $("#version-detail").hidden = true;
      ds.hideInline("#models-error");
    },
  });

  document.addEventListener("DOMContentLoaded", () => {
    $("#models-refresh").addEventListener("click", load);
    $("#activate-dialog").addEventListener("close", onActivateClose);
  });

  window.DSModels = { addPanel, addCardAction, reload: load };
})();
