/* DigitServe "Improve" section, for administrators: review the corrections people sent (accept or
 * exclude each), start gated retraining and genetic searches on the training queue and follow them
 * epoch by epoch; and two panels of a version's details on the models dashboard: the retrain gate's
 * decision and the search's fitness per generation.
 */
(() => {
  "use strict";

  const ds = window.DigitServe;
  const charts = window.DSCharts;
  const $ = (sel) => document.querySelector(sel);
  const PAGE = 12;           // corrections per page
  const POLL_MS = 2000;      // a queued or running job is read again this often
  const ACTIVE = new Set(["queued", "running"]);

  const review = { state: "pending", offset: 0, next: null, counts: {}, request: 0 };
  const jobs = { list: [], details: new Map(), nodes: new Map(), timer: null, request: 0, models: [] };
  let retraining = null;     // the model whose retrain dialog is open

  function el(tag, attrs = {}, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs)) {
      if (v == null || v === false) continue;
      if (k === "class") node.className = v;
      else if (k === "text") node.textContent = v;
      else node.setAttribute(k, v === true ? "" : v);
    }
    for (const c of children) if (c != null) node.append(c);
    return node;
  }

  const pct = (v, digits = 2) => (typeof v === "number" ? `${(v * 100).toFixed(digits)} %` : "–");
  const visible = () => !$("#improve-view").hidden && !!ds.user();

  /* ------------------------------------------------------ feedback review */

  async function loadReview({ focusList = false, message = "" } = {}) {
    const mine = ++review.request;
    const list = $("#review-list");
    list.setAttribute("aria-busy", "true");
    $("#review-status").textContent = "Loading corrections…";
    ds.hideInline("#review-error");
    try {
      const q = `state=${review.state}&limit=${PAGE}&offset=${review.offset}`;
      const { data } = await ds.api("GET", `/feedback?${q}`);
      if (mine !== review.request || !ds.user()) return;
      if (!data.samples.length && review.offset > 0) {   // the last page emptied: go back one
        review.offset = Math.max(0, review.offset - PAGE);
        loadReview({ focusList, message });
        return;
      }
      review.counts = data.counts || {};
      review.next = data.next_offset;
      renderReview(data.samples);
      $("#review-status").textContent = message;
      if (focusList) focusFirstAction();
    } catch (err) {
      if (mine !== review.request) return;
      $("#review-status").textContent = "";
      ds.handleError(err, "#review-error");
    } finally {
      if (mine === review.request) list.setAttribute("aria-busy", "false");
    }
  }

  function renderCounts() {
    for (const button of document.querySelectorAll("#review-states .review-state")) {
      const n = review.counts[button.dataset.state];
      button.querySelector(".count").textContent = typeof n === "number" ? `(${n})` : "";
      button.setAttribute("aria-pressed", button.dataset.state === review.state ? "true" : "false");
    }
  }

  function renderPager(shown) {
    const total = review.counts[review.state] || 0;
    $("#review-prev").disabled = review.offset === 0;
    $("#review-next").disabled = review.next == null;
    $("#review-page").textContent = shown
      ? `${review.offset + 1}–${review.offset + shown} of ${total}` : "";
    $(".pager").hidden = review.offset === 0 && review.next == null;
  }

  const EMPTY = {
    pending: "Nothing to review: no correction is waiting. People correct answers with “Wrong? Correct it” under Predict and History.",
    accepted: "No accepted corrections yet. Accepted ones are trained on when you retrain.",
    excluded: "No excluded corrections.",
  };

  function renderReview(samples) {
    renderCounts();
    const list = $("#review-list");
    list.replaceChildren(...samples.map(sampleItem));
    const empty = $("#review-empty");
    empty.hidden = samples.length > 0;
    empty.textContent = EMPTY[review.state];
    renderPager(samples.length);
  }

  const ACTIONS = {
    pending: [["accepted", "Accept", "button-primary"], ["excluded", "Exclude", "button-danger-ghost"]],
    accepted: [["excluded", "Exclude", "button-danger-ghost"], ["pending", "Back to pending", ""]],
    excluded: [["accepted", "Accept", "button-primary"], ["pending", "Back to pending", ""]],
  };

  function sampleItem(s) {
    const key = `${s.prediction_id}:${s.index}`;
    const li = el("li", { class: "review-item", "data-testid": "review-item", "data-sample": key,
      "data-prediction": s.prediction_id });
    const img = el("img", { class: "review-image", src: `data:image/png;base64,${s.image}`, width: "84", height: "84",
      alt: `The 28 by 28 image the network saw, labelled ${s.label} by the user` });
    const answer = s.predicted == null ? "no answer"
      : `${s.predicted}${typeof s.confidence === "number" ? ` (${pct(s.confidence, 1)})` : ""}`;
    const labels = el("p", { class: "review-labels" },
      el("span", { class: "review-label" }, "Label ", el("strong", { class: "review-digit", "data-testid": "review-label", text: String(s.label) })),
      el("span", { class: "review-answer" }, "network said ",
        el("strong", { "data-testid": "review-predicted", text: answer })));
    const facts = el("dl", { class: "review-facts small" });
    const fact = (k, v, title) => facts.append(el("dt", { text: k }), el("dd", { text: v, title }));
    fact("User", s.user_id != null ? `#${s.user_id}` : "deleted");
    fact("Prediction", `${s.prediction_id.slice(0, 8)}…${s.index ? ` image ${s.index + 1}` : ""}`, s.prediction_id);
    fact("Model", `${s.model.name}:${s.model.version}`);
    fact("Corrected", ds.absoluteTime(s.feedback_at));
    if (s.reviewed_at) fact("Reviewed", `${ds.absoluteTime(s.reviewed_at)}${s.reviewed_by != null ? ` by #${s.reviewed_by}` : ""}`);
    const actions = el("div", { class: "review-actions" });
    for (const [state, label, cls] of ACTIONS[s.state] || []) {
      const b = el("button", { type: "button", class: `button small ${cls}`, "data-testid": `review-${state === "accepted" ? "accept" : state === "excluded" ? "exclude" : "reset"}`,
        "aria-label": `${label}: label ${s.label}, prediction ${s.prediction_id.slice(0, 8)}`, text: label });
      b.addEventListener("click", () => setState(s, state, li, b));
      actions.append(b);
    }
    li.append(img, el("div", { class: "review-body" }, labels, facts), actions);
    return li;
  }

  async function setState(s, state, li, button) {
    ds.hideInline("#review-error");
    for (const b of li.querySelectorAll("button")) b.disabled = true;
    const before = button.textContent;
    button.textContent = "Saving…";
    try {
      await ds.api("PATCH", `/feedback/${encodeURIComponent(s.prediction_id)}`, { json: { state, index: s.index } });
      review.counts[s.state] = Math.max(0, (review.counts[s.state] || 1) - 1);
      review.counts[state] = (review.counts[state] || 0) + 1;
      const next = li.nextElementSibling || li.previousElementSibling;
      li.remove();
      const word = { accepted: "Accepted", excluded: "Excluded", pending: "Back to pending" }[state];
      const message = `${word}: the ${s.label} from prediction ${s.prediction_id.slice(0, 8)}.`;
      $("#review-status").textContent = message;
      renderCounts();
      const left = $("#review-list").children.length;
      if (!left) {
        loadReview({ focusList: true, message });
      } else {
        renderPager(left);
        const target = next && next.querySelector("button");
        if (target) target.focus();
      }
    } catch (err) {
      for (const b of li.querySelectorAll("button")) b.disabled = false;
      button.textContent = before;
      ds.handleError(err, "#review-error");
    }
  }

  function focusFirstAction() {
    const b = $("#review-list button");
    if (b) b.focus();
    else $("#review-title").focus({ preventScroll: true });
  }

  /* --------------------------------------------------------- training jobs */

  async function loadModels() {
    try {
      const { data } = await ds.api("GET", "/models");
      if (!ds.user()) return;
      jobs.models = (data && data.models) || [];
      renderStarters();
    } catch (err) {
      ds.handleError(err, "#jobs-error");
    }
  }

  function renderStarters() {
    const box = $("#retrain-models");
    box.replaceChildren();
    const retrainable = jobs.models.filter((m) => m.active_version != null);
    if (!retrainable.length) box.append(el("li", { class: "muted small", text: "No model has an active version to retrain." }));
    for (const m of retrainable) {
      const active = m.versions.find((v) => v.version === m.active_version) || {};
      const b = el("button", { type: "button", class: "button small", "data-testid": "retrain", "data-model": m.name,
        "aria-label": `Retrain ${m.name} (active version ${m.active_version})`, text: "Retrain…" });
      b.addEventListener("click", () => askRetrain(m, active, b));
      box.append(el("li", { class: "retrain-model" },
        el("span", {}, el("strong", { class: "mono", text: `${m.name}:${m.active_version}` }),
          el("span", { class: "muted small", text: ` ${active.family || ""} · ${pct(active.test_accuracy)} on MNIST` })), b));
    }
    const select = $("#tune-family");
    const chosen = select.value;
    const families = [...new Set(jobs.models.flatMap((m) => m.versions.map((v) => v.family)).filter(Boolean))].sort();
    select.replaceChildren(...families.map((f) => el("option", { value: f, text: f })));
    if (families.includes(chosen)) select.value = chosen;
    $("#tune-start").disabled = !families.length;
  }

  /** The retrain confirmation; `from` is "improve" (this section) or "models" (a model card's button). */
  function askRetrain(m, active, button, from = "improve") {
    retraining = { m, button, from };
    const accepted = review.counts.accepted;
    const known = typeof accepted === "number";
    $("#retrain-dialog-title").textContent = `Retrain ${m.name}?`;
    const trained = `A candidate with the ${active.family || "same"} family and hyper-parameters of `
      + `${m.name}:${m.active_version} is trained on MNIST`;
    const paragraphs = [
      known && accepted === 0 ? `${trained} only: no correction is accepted yet.`
        : `${trained} plus the ${known ? `${accepted} ` : ""}accepted correction${accepted === 1 ? "" : "s"}; `
          + "a share of them (20 % unless configured) is held out for judging.",
      `The gate evaluates the candidate and v${m.active_version} on the 10,000 MNIST test digits and on the held-out `
        + "corrections. The candidate becomes active only if it is not worse on MNIST (within the tolerance, 0.2 "
        + "points unless configured) and strictly better on the held-out corrections; otherwise it is registered "
        + "and stays inactive.",
    ];
    if (known && accepted < 2) {
      paragraphs.push("With fewer than two accepted corrections nothing is held out, so the candidate will not be "
        + "activated: accept corrections under Feedback review first.");
    }
    $("#retrain-text").replaceChildren(...paragraphs.map((text) => el("p", { text })));
    const dialog = $("#retrain-dialog");
    dialog.returnValue = "";
    dialog.showModal();
  }

  const numberOrNull = (sel) => {
    const raw = $(sel).value.trim();
    return raw === "" ? null : Number(raw);
  };

  async function onRetrainClose() {
    const pending = retraining;
    retraining = null;
    if (!pending) return;
    if ($("#retrain-dialog").returnValue !== "retrain") {
      pending.button.focus();
      return;
    }
    const spec = { kind: "retrain", name: pending.m.name };
    const epochs = numberOrNull("#retrain-epochs"), limit = numberOrNull("#retrain-limit");
    if (epochs != null) spec.epochs = epochs;
    if (limit != null) spec.limit = limit;
    const errorAt = pending.from === "models" ? "#models-error" : "#jobs-error";
    const id = await submit(spec, pending.button, errorAt, `Retraining ${pending.m.name}`);
    if (id && pending.from === "models") location.hash = "#improve";   // where the job is followed
  }

  async function onTuneSubmit(event) {
    event.preventDefault();
    ds.hideInline("#tune-error");
    const spec = { kind: "tune", family: $("#tune-family").value };
    for (const [key, sel] of [["population", "#tune-population"], ["generations", "#tune-generations"],
      ["seed", "#tune-seed"], ["epochs", "#tune-epochs"], ["limit", "#tune-limit"]]) {
      const v = numberOrNull(sel);
      if (v != null) {
        if (!Number.isInteger(v)) {
          ds.showInline("#tune-error", `${$(`label[for="${sel.slice(1)}"]`).textContent} must be a whole number.`);
          $(sel).focus();
          return;
        }
        spec[key] = v;
      }
    }
    await submit(spec, $("#tune-start"), "#tune-error", `Genetic search over ${spec.family}`);
  }

  async function submit(spec, button, errorAt, what) {
    ds.hideInline(errorAt);
    ds.hideInline("#jobs-error");
    const label = button.textContent;
    button.disabled = true;
    button.textContent = "Starting…";
    $("#jobs-status").textContent = `${what}: sending the job…`;
    try {
      const { data } = await ds.api("POST", "/training-jobs", { json: spec });
      jobs.details.set(data.id, data);
      $("#jobs-status").textContent = `${what}: job ${data.id.slice(0, 8)} is ${data.status}.`;
      await loadJobs();
      const node = jobs.nodes.get(data.id);
      if (node && visible()) node.querySelector(".job-title").focus();
      return data.id;
    } catch (err) {
      $("#jobs-status").textContent = "";
      ds.handleError(err, errorAt);
      return null;
    } finally {
      button.disabled = false;
      button.textContent = label;
    }
  }

  async function loadJobs() {
    const mine = ++jobs.request;
    clearTimeout(jobs.timer);
    const box = $("#jobs");
    box.setAttribute("aria-busy", "true");
    try {
      const { data } = await ds.api("GET", "/training-jobs?limit=10");
      if (mine !== jobs.request || !ds.user()) return;
      jobs.list = data.jobs || [];
      // the running and queued ones in full: their progress per epoch
      const active = jobs.list.filter((j) => ACTIVE.has(j.status) || (jobs.details.has(j.id)
        && ACTIVE.has(jobs.details.get(j.id).status)));
      const full = await Promise.all(active.map((j) => ds.api("GET", `/training-jobs/${j.id}`).then((r) => r.data)));
      if (mine !== jobs.request || !ds.user()) return;
      for (const j of full) jobs.details.set(j.id, j);
      renderJobs();
      ds.hideInline("#jobs-error");
    } catch (err) {
      if (mine !== jobs.request) return;
      ds.handleError(err, "#jobs-error");
    } finally {
      if (mine === jobs.request) {
        box.setAttribute("aria-busy", "false");
        schedule();
      }
    }
  }

  function schedule() {
    clearTimeout(jobs.timer);
    const waiting = jobs.list.some((j) => ACTIVE.has(current(j).status));
    if (waiting && visible()) jobs.timer = setTimeout(loadJobs, POLL_MS);
  }

  /** The freshest we know of a job: its full document when we read one at least as new as the list. */
  function current(j) {
    const d = jobs.details.get(j.id);
    return d && (ACTIVE.has(j.status) || !ACTIVE.has(d.status)) ? { ...j, ...d } : j;
  }

  function renderJobs() {
    const box = $("#jobs");
    $("#jobs-empty").hidden = jobs.list.length > 0;
    const seen = new Set();
    jobs.list.forEach((j, i) => {
      seen.add(j.id);
      let node = jobs.nodes.get(j.id);
      if (!node) {
        node = jobNode(j);
        jobs.nodes.set(j.id, node);
      }
      updateJob(node, current(j));
      if (box.children[i] !== node) box.insertBefore(node, box.children[i] || null);
    });
    for (const [id, node] of jobs.nodes) {
      if (!seen.has(id)) {
        node.remove();
        jobs.nodes.delete(id);
      }
    }
  }

  function jobTitle(j) {
    const s = j.spec || {};
    if (j.kind === "retrain") return `Retrain ${s.name}`;
    if (j.kind === "tune") return `Genetic search: ${s.family}${s.name && s.name !== s.family ? ` → ${s.name}` : ""}`
      + ` (population ${s.population}, ${s.generations} generation${s.generations === 1 ? "" : "s"}, seed ${s.seed})`;
    return `Train ${s.name}${s.family && s.family !== s.name ? ` (${s.family})` : ""}`;
  }

  function jobNode(j) {
    const li = el("li", { class: "job", "data-testid": "job", "data-job": j.id });
    const cancel = el("button", { type: "button", class: "button small button-danger-ghost job-cancel",
      "data-testid": "job-cancel", text: "Cancel" });
    cancel.addEventListener("click", () => cancelJob(j.id, cancel));
    li.append(
      el("div", { class: "job-head" },
        el("h4", { class: "job-title", tabindex: "-1" }),
        el("span", { class: "job-status", "data-testid": "job-status" }),
        cancel),
      el("p", { class: "job-meta muted small" }),
      el("div", { class: "job-progress" }),
      el("div", { class: "job-charts" }),
      el("p", { class: "job-result", "data-testid": "job-result" }));
    return li;
  }

  /** Epoch entries of the run in progress (a search trains many: the latest individual or the final run). */
  function lastRun(progress) {
    let entries = [];
    let at = null;
    for (const p of progress) {
      if (p.type === "requeued") { entries = []; at = null; continue; }
      if (p.type !== "epoch") continue;
      const run = `${p.stage || ""}:${p.evaluation || ""}`;
      if (run !== at || p.epoch === 1) entries = [];
      at = run;
      entries.push(p);
    }
    return entries;
  }

  function progressOf(j) {
    const progress = j.progress || [];
    const s = j.spec || {};
    if (j.kind === "tune") {
      const restart = progress.map((p) => p.type).lastIndexOf("requeued");
      const gens = progress.slice(restart + 1).filter((p) => p.type === "generation");
      const run = lastRun(progress);
      const final = run.length && run[0].stage === "final";
      const last = run[run.length - 1];
      const total = s.generations + 1;          // the generations, then the best trained again
      const done = gens.length + (final && last && last.epoch === last.epochs ? 1 : 0);
      const text = final ? `training the best again: epoch ${last.epoch} of ${last.epochs}`
        : `generation ${Math.min(gens.length + 1, s.generations)} of ${s.generations}`
          + (last ? `, individual ${last.evaluation}, epoch ${last.epoch} of ${last.epochs}` : "");
      return { done, total, text, run, gens };
    }
    const run = lastRun(progress);
    const last = run[run.length - 1];
    const total = last ? last.epochs : s.epochs;
    return { done: run.length, total, text: last ? `epoch ${last.epoch} of ${last.epochs}` : "", run, gens: [] };
  }

  const STATUS_TEXT = { queued: "queued", running: "running", succeeded: "succeeded", failed: "failed", cancelled: "cancelled" };

  function updateJob(node, j) {
    node.dataset.status = j.status;
    node.querySelector(".job-title").textContent = jobTitle(j);
    const status = node.querySelector(".job-status");
    status.textContent = STATUS_TEXT[j.status] || j.status;
    status.className = `job-status is-${j.status}`;
    const meta = [`job ${j.id.slice(0, 8)}`, `submitted ${ds.absoluteTime(j.created_at)}`];
    if (j.started_at) meta.push(`started ${ds.absoluteTime(j.started_at)}`);
    if (j.finished_at) meta.push(`finished ${ds.absoluteTime(j.finished_at)}`);
    if (j.worker) meta.push(`on ${j.worker}`);
    node.querySelector(".job-meta").textContent = meta.join(" · ");

    const cancel = node.querySelector(".job-cancel");
    cancel.hidden = !ACTIVE.has(j.status);
    const asked = j.cancel_requested && j.status === "running";
    if (asked) {
      cancel.disabled = true;
      cancel.textContent = "Stopping after this epoch…";
    }
    cancel.setAttribute("aria-label", `Cancel job ${j.id.slice(0, 8)}: ${jobTitle(j)}`);

    const box = node.querySelector(".job-progress");
    if (ACTIVE.has(j.status)) {
      const p = j.progress ? progressOf(j) : null;
      const bar = el("progress", { max: p && p.total ? String(p.total) : null, class: "job-bar",
        "aria-label": `Progress of job ${j.id.slice(0, 8)}` });
      if (p && p.total && j.status === "running") bar.value = Math.min(p.done, p.total);
      const words = j.status === "queued" ? "Waiting for a training worker (digitserve worker --queue training)…"
        : p && p.text ? `Running: ${p.text}.` : "Running: loading the data…";
      const label = el("span", { class: "small job-progress-text", text: words });
      const old = box.querySelector("progress");
      if (old && old.getAttribute("max") === bar.getAttribute("max") && old.hasAttribute("value") === bar.hasAttribute("value")) {
        old.value = bar.value;
        box.querySelector(".job-progress-text").textContent = words;
      } else {
        box.replaceChildren(bar, label);
      }
    } else {
      box.replaceChildren();
    }

    // the charts only change when an epoch or a generation arrives
    const charts_ = node.querySelector(".job-charts");
    const size = j.progress ? j.progress.length : -1;
    if (String(size) !== charts_.dataset.size) {
      charts_.dataset.size = String(size);
      charts_.replaceChildren(...(j.progress ? jobCharts(j) : []));
    }
    node.querySelector(".job-result").replaceChildren(...resultNodes(j));
  }

  function jobCharts(j) {
    const { run, gens } = progressOf(j);
    const out = [];
    const stage = run.length && run[0].stage === "search" ? `individual ${run[0].evaluation}`
      : run.length && run[0].stage === "final" ? "the best, trained again" : "";
    const title = (what) => `${what} per epoch${stage ? ` (${stage})` : ""}`;
    if (j.kind === "tune" && gens.length) out.push(fitnessChart(gens, "Fitness per generation so far", `job-fitness`));
    const has = (k) => run.some((p) => Number.isFinite(p[k]));
    const series = (pairs) => pairs.filter(([k]) => has(k))
      .map(([k, name, cls]) => ({ name, cls, values: run.map((p) => (Number.isFinite(p[k]) ? p[k] : NaN)) }));
    const loss = series([["loss", "training", "series-1"], ["val_loss", "validation", "series-2"]]);
    if (loss.length) {
      out.push(charts.lineChart({ title: title("Loss"), yLabel: "loss", testid: "job-loss", series: loss,
        tickFormat: (x) => String(Math.round(x * 1000) / 1000) }));
    }
    const acc = series([["accuracy", "training", "series-1"], ["val_accuracy", "validation", "series-2"]]);
    if (acc.length) {
      out.push(charts.lineChart({ title: title("Accuracy"), yLabel: "accuracy (%)", testid: "job-accuracy", series: acc,
        max: 1, format: (x) => `${(x * 100).toFixed(1)}`, tickFormat: (x) => String(Math.round(x * 1000) / 10) }));
    }
    return out.length ? [el("div", { class: "chart-row job-chart-row" }, ...out)] : [];
  }

  function resultNodes(j) {
    if (j.status === "failed") return [el("span", { class: "job-error", text: `Failed: ${sentence(j.error || "no reason was recorded")}` })];
    if (j.status === "cancelled") return [document.createTextNode("Cancelled: nothing was registered.")];
    if (j.status !== "succeeded" || !j.result) return [];
    const r = j.result;
    const m = r.model || {};
    const parts = [el("strong", { class: "mono", text: `${m.name}:${m.version}` }),
      document.createTextNode(` registered (${pct(r.test_accuracy)} on MNIST), ${m.active ? "active" : "not active"}. `)];
    if (r.gate) {
      parts.push(document.createTextNode(`Gate: ${r.gate.activated ? "activated" : "not activated"} — ${r.gate.reason}. `));
    }
    if (r.search) {
      parts.push(document.createTextNode(`Best validation accuracy in the search ${pct(r.search.best_fitness)}. `));
    }
    parts.push(document.createTextNode("Its details are under Models."));
    return parts;
  }

  async function cancelJob(id, button) {
    ds.hideInline("#jobs-error");
    button.disabled = true;
    button.textContent = "Cancelling…";
    try {
      const { data } = await ds.api("POST", `/training-jobs/${id}/cancel`);
      jobs.details.set(id, data);
      $("#jobs-status").textContent = data.status === "cancelled" ? `Job ${id.slice(0, 8)} is cancelled.`
        : `Job ${id.slice(0, 8)} stops at the end of its current epoch.`;
      await loadJobs();
      const node = jobs.nodes.get(id);
      if (node && document.activeElement === document.body) node.querySelector(".job-title").focus();
    } catch (err) {
      button.disabled = false;
      button.textContent = "Cancel";
      ds.handleError(err, "#jobs-error");
    }
  }

  window.DSModels.addCardAction({
    render(m) {
      if (!ds.isAdmin() || m.active_version == null) return null;
      const active = m.versions.find((v) => v.version === m.active_version) || {};
      const b = el("button", { type: "button", class: "button small", "data-testid": "model-retrain",
        "aria-label": `Retrain ${m.name} (active version ${m.active_version})`, text: "Retrain…" });
      b.addEventListener("click", () => askRetrain(m, active, b, "models"));
      return b;
    },
  });

  /* ------------------------------------------- panels of a version's details */

  function fitnessChart(history, title, testid) {
    return charts.lineChart({
      title, xLabel: "generation", yLabel: "validation accuracy (%)", testid,
      format: (x) => `${(x * 100).toFixed(2)}`, tickFormat: (x) => String(Math.round(x * 1000) / 10),
      series: [{ name: "best", cls: "series-1", values: history.map((h) => h.best) },
        { name: "mean", cls: "series-2", values: history.map((h) => h.mean) }],
    });
  }

  function facts(pairs) {
    const dl = el("dl", { class: "facts" });
    for (const [k, v, testid] of pairs) dl.append(el("dt", { text: k }), el("dd", { text: v, "data-testid": testid }));
    return dl;
  }

  const sentence = (t) => (t ? `${t.charAt(0).toUpperCase()}${t.slice(1)}${/[.!?]$/.test(t) ? "" : "."}` : "");

  window.DSModels.addPanel({
    id: "gate", title: "Retrain gate", before: "curves",
    render(v, model) {
      const g = v.gate;
      if (!g) return null;
      const cand = g.candidate || {}, act = g.active || {};
      const fb = g.feedback || {};
      const decision = el("p", { class: `gate-decision ${g.activated ? "is-yes" : "is-no"}`, "data-testid": "gate-decision" },
        el("strong", { text: g.activated ? "Activated" : "Not activated" }), document.createTextNode(`: ${g.reason}.`));
      const list = facts([
        ["Compared with", act.name ? `${act.name}:${act.version} (active then)` : "–"],
        ["MNIST", `${pct(cand.mnist_accuracy)} against ${pct(act.mnist_accuracy)} — ${g.mnist_not_worse ? "not worse" : "worse"} within ${((g.tolerance || 0) * 100).toFixed(2)} points`],
        ["Held-out corrections", fb.held_out ? `${pct(cand.feedback_accuracy, 1)} against ${pct(act.feedback_accuracy, 1)} on ${fb.held_out} — ${g.feedback_better ? "better" : "not better"}` : "none held out"],
        ["Corrections", `${fb.accepted ?? "–"} accepted: ${fb.trained_on ?? "–"} trained on, ${fb.held_out ?? "–"} held out (seed ${fb.seed ?? "–"})`],
        ["Rule", sentence(g.rule)],
      ]);
      const categories = [], cvals = [], avals = [];
      if (Number.isFinite(cand.mnist_accuracy) && Number.isFinite(act.mnist_accuracy)) {
        categories.push(`MNIST test${g.mnist_test_size ? ` (${g.mnist_test_size.toLocaleString("en")})` : ""}`);
        cvals.push(cand.mnist_accuracy);
        avals.push(act.mnist_accuracy);
      }
      if (Number.isFinite(cand.feedback_accuracy) && Number.isFinite(act.feedback_accuracy)) {
        categories.push(`held-out feedback (${fb.held_out})`);
        cvals.push(cand.feedback_accuracy);
        avals.push(act.feedback_accuracy);
      }
      const wrap = el("div", { class: "summary-grid" }, el("div", {}, decision, list));
      if (categories.length) {
        wrap.append(charts.groupedBars({ title: "Candidate against the active version", xLabel: "evaluated on",
          yLabel: "accuracy %", testid: "chart-gate", categories,
          series: [{ name: `candidate ${model.name}:${v.version}`, cls: "series-1", values: cvals },
            { name: `active then ${act.name}:${act.version}`, cls: "series-2", values: avals }] }));
      }
      return wrap;
    },
  });

  window.DSModels.addPanel({
    id: "search", title: "Genetic search", before: "curves",
    render(v) {
      const s = v.search;
      if (!s) return null;
      const history = Array.isArray(s.history) ? s.history : [];
      const best = s.best || {};
      const list = facts([
        ["Search", `${s.family}: population ${s.population}, ${s.generations} generations, elitism ${s.elitism}, seed ${s.seed}`],
        ["Fitness", `${String(s.fitness || "validation accuracy").replace(/_/g, " ")} (the test set is never used)`],
        ["Individuals trained", String(s.evaluations ?? "–")],
        ["Best fitness", pct(s.best_fitness), "search-best"],
      ]);
      const left = el("div", {}, list);
      const rows = Object.entries(best).map(([k, val]) => [k, typeof val === "object" ? JSON.stringify(val) : String(val)]);
      if (rows.length) {
        const t = charts.table(["gene", "best value"], rows, "The best individual's hyper-parameters");
        t.classList.add("hp-table");
        left.append(el("div", { class: "table-scroll" }, t));
      }
      const wrap = el("div", { class: "summary-grid" }, left);
      if (history.length) wrap.append(fitnessChart(history, "Fitness per generation", "chart-fitness"));
      return wrap;
    },
  });

  window.DSModels.addPanel({
    id: "samples", title: "Generated digits", before: "curves",
    render(v) {
      if (v.kind !== "generator") return null;
      const src = `/api/v1/models/${encodeURIComponent(v.name)}/versions/${v.version}/samples.png?per_class=8`;
      return el("figure", { class: "gan-grid" },
        el("img", { src, alt: `Digits made by ${v.name}:${v.version}: a row per class, 0 to 9, eight each`,
                    "data-testid": "gan-grid" }),
        el("figcaption", { text: "A row per digit, 0 (top) to 9, eight samples each, made by the generator " +
                                 "from random noise; `digitserve train NAME --gan-samples N` adds such digits to a training set." }));
    },
  });

  /* --------------------------------------------------------------- wiring */

  function reset() {
    review.request += 1;
    jobs.request += 1;
    clearTimeout(jobs.timer);
    review.offset = 0;
    review.state = "pending";
    review.counts = {};
    jobs.list = [];
    jobs.details.clear();
    jobs.nodes.clear();
    jobs.models = [];
    for (const sel of ["#review-list", "#jobs", "#retrain-models", "#tune-family"]) $(sel).replaceChildren();
    for (const sel of ["#review-status", "#jobs-status"]) $(sel).textContent = "";
    for (const sel of ["#review-error", "#jobs-error", "#tune-error"]) ds.hideInline(sel);
  }

  ds.registerView("improve", {
    selector: "#improve-view", title: "Improve", heading: "#review-title", adminOnly: true,
    show: (changed) => {
      if (!changed) return;
      loadReview();
      loadModels();
      loadJobs();
    },
    signOut: reset,
  });

  document.addEventListener("DOMContentLoaded", () => {
    for (const button of document.querySelectorAll("#review-states .review-state")) {
      button.addEventListener("click", () => {
        review.state = button.dataset.state;
        review.offset = 0;
        renderCounts();
        loadReview();
      });
    }
    $("#review-refresh").addEventListener("click", () => loadReview());
    $("#review-prev").addEventListener("click", () => {
      review.offset = Math.max(0, review.offset - PAGE);
      loadReview({ focusList: true });
    });
    $("#review-next").addEventListener("click", () => {
      if (review.next != null) review.offset = review.next;
      loadReview({ focusList: true });
    });
    $("#jobs-refresh").addEventListener("click", () => { loadModels(); loadJobs(); });
    $("#tune-form").addEventListener("submit", onTuneSubmit);
    $("#retrain-dialog").addEventListener("close", onRetrainClose);
    // polling stops when the section is left; coming back reads everything again (show(changed))
    window.addEventListener("hashchange", () => { if (!visible()) clearTimeout(jobs.timer); });
  });
})();
