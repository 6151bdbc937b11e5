/* DigitServe browser page: sign-in, drawing canvas, uploads, predictions, feedback.
 *
 * Plain ES2020, no dependencies. Talks only to the JSON API under /api/v1 on the
 * same origin with the session cookie; every unsafe request carries the CSRF
 * token from GET/POST /api/v1/sessions in the X-CSRF-Token header.
 */
(() => {
  "use strict";

  const API = "/api/v1";
  const CANVAS_SIZE = 280;       // CSS pixels
  const STROKE_WIDTH = 18;       // CSS pixels
  const KEY_STEP = 10;           // CSS pixels per arrow key press
  const WAIT_SECONDS = 10;       // server-side wait for the POST
  const POLL_INTERVAL_MS = 300;
  const POLL_TIMEOUT_MS = 120000;
  const RECENT_LIMIT = 10;
  const UNSAFE = new Set(["POST", "PUT", "PATCH", "DELETE"]);

  const $ = (sel) => document.querySelector(sel);

  const state = {
    user: null,
    csrf: null,
    files: [],            // [{file, url}]
    hasInk: false,
    busy: false,
    runToken: 0,          // increments per prediction run / sign-out; stale runs stop
    resultUrls: [],       // object URLs shown in the results (revoked on replace)
  };

  /* ------------------------------------------------------------------ */
  /* API helper                                                          */
  /* ------------------------------------------------------------------ */

  class ApiError extends Error {
    constructor(status, code, message, retryAfter) {
      super(message);
      this.status = status;
      this.code = code;
      this.retryAfter = retryAfter;
    }
  }

  function parseRetryAfter(value) {
    if (!value) return null;
    const secs = Number(value);
    if (Number.isFinite(secs)) return Math.max(0, Math.ceil(secs));
    const when = Date.parse(value);
    return Number.isNaN(when) ? null : Math.max(0, Math.ceil((when - Date.now()) / 1000));
  }

  async function api(method, path, { json, form, signal } = {}) {
    const headers = { Accept: "application/json" };
    let body;
    if (json !== undefined) {
      headers["Content-Type"] = "application/json";
      body = JSON.stringify(json);
    } else if (form !== undefined) {
      body = form;  // the browser sets multipart/form-data with its boundary
    }
    if (UNSAFE.has(method) && state.csrf) headers["X-CSRF-Token"] = state.csrf;

    let response;
    try {
      response = await fetch(API + path, {
        method, headers, body, signal, credentials: "same-origin", cache: "no-store",
      });
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      throw new ApiError(0, "network_error", "Cannot reach the server. Check your connection and try again.");
    }

    let data = null;
    const text = await response.text();
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = null; }
    }
    if (!response.ok) {
      const retryAfter = parseRetryAfter(response.headers.get("Retry-After"));
      const err = data && data.error ? data.error : {};
      const message = err.message || defaultMessage(response.status);
      throw new ApiError(response.status, err.code || `http_${response.status}`, message, retryAfter);
    }
    return { status: response.status, data, headers: response.headers };
  }

  function defaultMessage(status) {
    switch (status) {
      case 400: return "The request was not valid.";
      case 401: return "Please sign in.";
      case 403: return "You are not allowed to do that.";
      case 404: return "Not found.";
      case 409: return "That already exists.";
      case 413: return "The upload is too large.";
      case 415: return "Unsupported image type.";
      case 422: return "The image could not be used.";
      case 429: return "Too many requests.";
      case 503: return "The service is busy or unavailable.";
      default: return `The server answered with an error (${status}).`;
    }
  }

  const IMAGE_TYPES = "PNG, JPEG, GIF, BMP, WebP or TIFF";
  const PASSWORD_RULES = "at least 10 characters, at least 5 different characters, "
    + "not a common password and not the name part of your email";

  /** Sentences for people, by the API's error code (the server's message is the fallback). */
  const HUMAN = {
    weak_password: `That password is too easy to guess. Use ${PASSWORD_RULES}.`,
    email_taken: "An account with this email already exists. Sign in instead, or use another email.",
    bad_email: "That does not look like an email address. Check it and try again.",
    invalid_credentials: "Wrong email or password.",
    too_many_attempts: "Too many failed sign-ins for this email. Wait a minute, then try again.",
    rate_limited: "You are sending requests faster than allowed. Wait a moment and try again.",
    blank_image: "The image looks blank: no digit stands out from the background. Draw larger, darker strokes, or choose another image.",
    unreadable_image: "The file could not be read as a picture: it may be damaged or cut short.",
    unsupported_media_type: `Unsupported file: it is not a ${IMAGE_TYPES} image.`,
    image_too_large: "The image is too large: at most 4 MB and 16 megapixels per image.",
    payload_too_large: "The upload is too large: at most 4 MB in one go.",
    too_many_images: "Too many images at once: send at most 16.",
    no_images: "There was no image to send. Draw a digit or choose an image file.",
    bad_multipart: "The upload was garbled on the way. Please try again.",
    model_not_found: "That model (or version) is not available any more. Pick another one in the list.",
    service_unavailable: "The service is busy or a part of it is down for a moment.",
    network_error: "Cannot reach the server. Check your connection and try again.",
    forbidden: "You are not allowed to do that.",
    not_found: "That was not found: it may have been deleted.",
    unauthorized: "Please sign in again.",
    account_disabled: "This account is disabled. Ask an administrator to re-enable it.",
    wrong_password: "Your current password is not right.",
    password_required: "Enter your current password.",
    last_admin: "You are the only administrator: make someone else an administrator first.",
  };

  /** The server's own wording as a sentence: a capital first letter and a full stop. */
  function sentence(text) {
    if (!text) return "";
    const t = text.charAt(0).toUpperCase() + text.slice(1);
    return /[.!?]$/.test(t) ? t : `${t}.`;
  }

  /** A sentence for people; `names` maps an image index in the request to a file name. */
  function describeError(err, names = []) {
    if (!(err instanceof ApiError)) return (err && err.message) || String(err);
    let msg = HUMAN[err.code] || sentence(err.message) || defaultMessage(err.status);
    // The server prefixes per-image problems with "image N: ": name the file instead.
    const which = /^image (\d+):/.exec(err.message || "");
    if (which) {
      const i = Number(which[1]);
      msg = `${names[i] ? `“${names[i]}”` : `Image ${i + 1}`}: ${msg.charAt(0).toLowerCase()}${msg.slice(1)}`;
    } else if (names.length === 1 && err.code in HUMAN && /image|file|upload/.test(err.code + msg)) {
      msg = `“${names[0]}”: ${msg.charAt(0).toLowerCase()}${msg.slice(1)}`;
    }
    if ((err.status === 429 || err.status === 503) && err.retryAfter != null) {
      msg += ` Try again in ${err.retryAfter} s.`;
    }
    return msg;
  }

  /* ------------------------------------------------------------------ */
  /* Messages: each error is shown next to what caused it                */
  /* ------------------------------------------------------------------ */

  function showInline(sel, message) {
    const el = $(sel);
    el.textContent = message;
    el.hidden = !message;
  }

  function hideInline(sel) {
    const el = $(sel);
    el.hidden = true;
    el.textContent = "";
  }

  function setStatus(text, st = "idle") {
    const el = $("#status");
    el.textContent = text;
    el.dataset.state = st;
  }

  /** Handle an error of a signed-in action next to `where`: an expired session goes back to the form. */
  function handleError(err, where, names) {
    if (err && err.name === "AbortError") return;
    if (err instanceof ApiError && err.status === 401 && state.user) {
      showSignedOut();
      showInline("#auth-error", "Your session has expired. Please sign in again.");
      return;
    }
    if (err instanceof ApiError && err.code === "account_disabled" && state.user) {
      showSignedOut();
      showInline("#auth-error", HUMAN.account_disabled);
      return;
    }
    showInline(where, describeError(err, names));
  }

  /* ------------------------------------------------------------------ */
  /* Views and authentication                                            */
  /* ------------------------------------------------------------------ */

  function showSignedIn(user, csrf) {
    state.user = user;
    state.csrf = csrf;
    $("#booting").hidden = true;
    $("#auth-view").hidden = true;
    $("#tabs").hidden = false;
    $("#account").hidden = false;
    hideInline("#auth-error");
    $("#user-email").textContent = user.email;
    $("#logout").setAttribute("aria-label", `Sign out ${user.email}`);
    $("#login-password").value = "";
    $("#auth-status").textContent = "";
    $("#scope-admin-row").hidden = user.role !== "admin";
    for (const el of document.querySelectorAll("[data-admin-only]")) el.hidden = user.role !== "admin";
    currentRoute = null;
    route();
    resizeCanvas();
    loadModels();
    loadRecent();
  }

  function showSignedOut() {
    state.user = null;
    state.csrf = null;
    state.runToken += 1;
    state.busy = false;
    updatePredictButton();
    $("#booting").hidden = true;
    for (const view of document.querySelectorAll("[data-view]")) view.hidden = true;
    $("#tabs").hidden = true;
    $("#account").hidden = true;
    $("#auth-view").hidden = false;
    $("#user-email").textContent = "";
    // Forget everything the previous user saw.
    clearResults();
    clearFiles();
    clearCanvas();
    $("#recent").replaceChildren();
    $("#recent-empty").hidden = true;
    resetHistory();
    $("#keys").replaceChildren();
    hideSecret();
    clearCompare();
    currentRoute = null;
    for (const view of Object.values(VIEWS)) if (view.signOut) view.signOut();
    for (const sel of ["#predict-error", "#files-error", "#recent-error", "#history-error", "#keys-error", "#key-error"]) {
      hideInline(sel);
    }
    $("#model-select").replaceChildren(new Option("Loading models…", ""));
    setStatus("Ready.");
    setAuthBusy(false);
  }

  function setAuthBusy(busy) {
    for (const id of ["#login-submit", "#register-submit"]) $(id).disabled = busy;
    $("#login-form").setAttribute("aria-busy", busy ? "true" : "false");
  }

  async function onAuthSubmit(event) {
    event.preventDefault();
    hideInline("#auth-error");
    const register = event.submitter ? event.submitter.id === "register-submit" : false;
    const email = $("#login-email").value.trim();
    const password = $("#login-password").value;
    if (!email || !password) {
      showInline("#auth-error", "Enter your email and a password.");
      (email ? $("#login-password") : $("#login-email")).focus();
      return;
    }
    setAuthBusy(true);
    const statusEl = $("#auth-status");
    try {
      if (register) {
        statusEl.textContent = "Creating your account…";
        await api("POST", "/users", { json: { email, password } });
      }
      statusEl.textContent = "Signing in…";
      const { data } = await api("POST", "/sessions", { json: { email, password } });
      showSignedIn(data.user, data.csrf_token);
      $("#main").focus({ preventScroll: true });
    } catch (err) {
      statusEl.textContent = "";
      if (err instanceof ApiError && err.status === 401) {
        showInline("#auth-error", HUMAN.invalid_credentials);
      } else if (err instanceof ApiError && err.code === "account_disabled") {
        showInline("#auth-error", HUMAN.account_disabled);
      } else if (err instanceof ApiError && err.status === 429) {
        const wait = err.retryAfter != null ? ` Try again in ${err.retryAfter} s.` : " Wait a minute, then try again.";
        showInline("#auth-error", `Too many sign-in attempts.${wait}`);
      } else {
        showInline("#auth-error", describeError(err));
      }
      const badEmail = err instanceof ApiError && (err.code === "bad_email" || err.code === "email_taken");
      (badEmail ? $("#login-email") : $("#login-password")).focus();
    } finally {
      setAuthBusy(false);
    }
  }

  async function onLogout() {
    const button = $("#logout");
    button.disabled = true;
    try {
      await api("DELETE", "/sessions");
    } catch (err) {
      // 401 means the session was already gone: signed out either way.
      if (!(err instanceof ApiError && err.status === 401)) {
        button.disabled = false;
        button.textContent = "Sign out failed — retry";
        button.title = describeError(err);
        return;
      }
    }
    button.disabled = false;
    button.textContent = "Sign out";
    button.removeAttribute("title");
    showSignedOut();
    $("#login-email").focus();
  }

  async function boot() {
    try {
      const { data } = await api("GET", "/sessions");
      showSignedIn(data.user, data.csrf_token);
    } catch (err) {
      showSignedOut();
      if (!(err instanceof ApiError && err.status === 401)) showInline("#auth-error", describeError(err));
    }
  }

  /* ------------------------------------------------------------------ */
  /* Drawing canvas                                                      */
  /* ------------------------------------------------------------------ */

  const canvas = () => $("#canvas");
  let ctx = null;
  let dpr = 1;
  let drawing = null;   // {id, x, y} of the active pointer
  let pen = { x: CANVAS_SIZE / 2, y: CANVAS_SIZE / 2 };

  function setupContext() {
    ctx = canvas().getContext("2d");
    ctx.setTransform(dpr, 0, 0, dpr, 0, 0);
    ctx.lineCap = "round";
    ctx.lineJoin = "round";
    ctx.lineWidth = STROKE_WIDTH;
    ctx.strokeStyle = "#000";
    ctx.fillStyle = "#000";
  }

  /** Size the backing store for devicePixelRatio, keeping what was drawn. */
  function resizeCanvas() {
    const c = canvas();
    const ratio = Math.max(1, Math.min(4, window.devicePixelRatio || 1));
    const px = Math.round(CANVAS_SIZE * ratio);
    if (ctx && c.width === px && c.height === px) return;
    let old = null;
    if (ctx && state.hasInk) {
      old = document.createElement("canvas");
      old.width = c.width;
      old.height = c.height;
      old.getContext("2d").drawImage(c, 0, 0);
    }
    dpr = ratio;
    c.width = px;
    c.height = px;
    setupContext();
    paintBackground();
    if (old) ctx.drawImage(old, 0, 0, CANVAS_SIZE, CANVAS_SIZE);
  }

  function paintBackground() {
    ctx.save();
    ctx.setTransform(1, 0, 0, 1, 0, 0);
    ctx.fillStyle = "#fff";
    ctx.fillRect(0, 0, canvas().width, canvas().height);
    ctx.restore();
  }

  function clearCanvas() {
    if (!ctx) return;
    paintBackground();
    state.hasInk = false;
    $("#canvas-hint").hidden = false;
  }

  function markInk() {
    if (!state.hasInk) {
      state.hasInk = true;
      $("#canvas-hint").hidden = true;
    }
  }

  function pointFromEvent(e) {
    const rect = canvas().getBoundingClientRect();
    const sx = CANVAS_SIZE / (rect.width || CANVAS_SIZE);
    const sy = CANVAS_SIZE / (rect.height || CANVAS_SIZE);
    return { x: (e.clientX - rect.left) * sx, y: (e.clientY - rect.top) * sy };
  }

  function dot(p) {
    ctx.beginPath();
    ctx.arc(p.x, p.y, STROKE_WIDTH / 2, 0, Math.PI * 2);
    ctx.fill();
    markInk();
  }

  function line(a, b) {
    ctx.beginPath();
    ctx.moveTo(a.x, a.y);
    ctx.lineTo(b.x, b.y);
    ctx.stroke();
    markInk();
  }

  function onPointerDown(e) {
    if (e.pointerType === "mouse" && e.button !== 0) return;
    if (drawing) return;   // one stroke at a time (ignore a second finger)
    e.preventDefault();
    const c = canvas();
    c.focus({ preventScroll: true });
    try { c.setPointerCapture(e.pointerId); } catch (_) { /* not capturable */ }
    const p = pointFromEvent(e);
    drawing = { id: e.pointerId, x: p.x, y: p.y };
    dot(p);
    pen = p;
  }

  function onPointerMove(e) {
    if (!drawing || e.pointerId !== drawing.id) return;
    e.preventDefault();
    const events = typeof e.getCoalescedEvents === "function" ? e.getCoalescedEvents() : [];
    for (const ev of events.length ? events : [e]) {
      const p = pointFromEvent(ev);
      line(drawing, p);
      drawing.x = p.x;
      drawing.y = p.y;
    }
    pen = { x: drawing.x, y: drawing.y };
  }

  function onPointerUp(e) {
    if (!drawing || e.pointerId !== drawing.id) return;
    drawing = null;
    try { canvas().releasePointerCapture(e.pointerId); } catch (_) { /* already released */ }
  }

  function showPenCursor() {
    const cursor = $("#pen-cursor");
    const rect = canvas().getBoundingClientRect();
    const s = (rect.width || CANVAS_SIZE) / CANVAS_SIZE;
    cursor.style.left = `${pen.x * s}px`;
    cursor.style.top = `${pen.y * s}px`;
    cursor.style.width = cursor.style.height = `${STROKE_WIDTH * s}px`;
    cursor.hidden = false;
  }

  function onCanvasKey(e) {
    const moves = { ArrowUp: [0, -1], ArrowDown: [0, 1], ArrowLeft: [-1, 0], ArrowRight: [1, 0] };
    if (e.key in moves) {
      e.preventDefault();
      const [dx, dy] = moves[e.key];
      const clamp = (v) => Math.max(STROKE_WIDTH / 2, Math.min(CANVAS_SIZE - STROKE_WIDTH / 2, v));
      const next = { x: clamp(pen.x + dx * KEY_STEP), y: clamp(pen.y + dy * KEY_STEP) };
      if (!e.shiftKey) line(pen, next);
      pen = next;
      showPenCursor();
    } else if (e.key === " " || e.key === "Spacebar") {
      e.preventDefault();
      dot(pen);
    } else if (e.key === "Delete" || e.key === "Backspace") {
      e.preventDefault();
      clearCanvas();
    }
  }

  function canvasBlob() {
    return new Promise((resolve, reject) => {
      canvas().toBlob((blob) => (blob ? resolve(blob) : reject(new Error("Could not export the drawing."))), "image/png");
    });
  }

  /* ------------------------------------------------------------------ */
  /* Files: chooser, drag and drop, previews                            */
  /* ------------------------------------------------------------------ */

  const IMAGE_MIME = new Set(["image/png", "image/jpeg", "image/pjpeg", "image/gif", "image/bmp", "image/x-bmp",
    "image/x-ms-bmp", "image/webp", "image/tiff", "image/x-tiff"]);
  const IMAGE_EXT = /\.(png|jpe?g|jfif|gif|bmp|dib|webp|tiff?)$/i;
  const MAX_FILE_BYTES = 4 * 1024 * 1024;
  const MAX_FILES = 16;

  /** Why a file cannot be sent, or "" when it can (by MIME type, or by extension when the type is unknown). */
  function fileProblem(file) {
    const type = (file.type || "").toLowerCase();
    const known = type && type !== "application/octet-stream";
    const ok = known ? IMAGE_MIME.has(type) : IMAGE_EXT.test(file.name || "");
    if (!ok) return `not a ${IMAGE_TYPES} image`;
    if (file.size > MAX_FILE_BYTES) return `larger than 4 MB (${formatBytes(file.size)})`;
    if (file.size === 0) return "empty";
    return "";
  }

  function addFiles(fileList) {
    const files = Array.from(fileList || []);
    if (!files.length) return;
    hideInline("#files-error");
    const skipped = [];
    for (const file of files) {
      const problem = fileProblem(file);
      if (problem) {
        skipped.push(`Skipped “${file.name || "unnamed file"}”: ${problem}.`);
      } else if (state.files.length >= MAX_FILES) {
        skipped.push(`Skipped “${file.name}”: at most ${MAX_FILES} images at once.`);
      } else {
        state.files.push({ file, url: URL.createObjectURL(file) });
      }
    }
    showInline("#files-error", skipped.join("\n"));
    renderFiles();
  }

  function removeFile(index) {
    const [gone] = state.files.splice(index, 1);
    if (gone) URL.revokeObjectURL(gone.url);
    renderFiles();
  }

  function clearFiles() {
    for (const f of state.files) URL.revokeObjectURL(f.url);
    state.files = [];
    renderFiles();
  }

  function formatBytes(n) {
    if (n < 1024) return `${n} B`;
    if (n < 1024 * 1024) return `${(n / 1024).toFixed(1)} KB`;
    return `${(n / 1024 / 1024).toFixed(1)} MB`;
  }

  function renderFiles() {
    const list = $("#file-list");
    list.replaceChildren();
    state.files.forEach(({ file, url }, i) => {
      const li = document.createElement("li");
      li.className = "file-item";
      const img = document.createElement("img");
      img.className = "file-thumb";
      img.alt = "";
      img.src = url;
      img.addEventListener("error", () => img.classList.add("file-thumb-broken"), { once: true });
      const meta = document.createElement("span");
      meta.className = "file-meta";
      const name = document.createElement("span");
      name.className = "file-name";
      name.textContent = file.name || `image ${i + 1}`;
      name.title = file.name;
      const size = document.createElement("span");
      size.className = "muted small";
      size.textContent = formatBytes(file.size);
      meta.append(name, size);
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "file-remove";
      remove.textContent = "×";
      remove.setAttribute("aria-label", `Remove ${file.name || `image ${i + 1}`}`);
      remove.addEventListener("click", () => {
        removeFile(i);
        (document.querySelector(".file-remove") || $("#file-input")).focus();
      });
      li.append(img, meta, remove);
      list.append(li);
    });
    const any = state.files.length > 0;
    $("#file-list-wrap").hidden = !any;
    $("#draw-area").classList.toggle("is-inactive", any);
    $("#draw-note").textContent = any
      ? `${state.files.length} image${state.files.length > 1 ? "s" : ""} chosen — Predict sends ${state.files.length > 1 ? "them" : "it"}, not the drawing.`
      : "Draw one digit, large and centred.";
  }

  function setupDropzone() {
    const zone = $("#dropzone");
    let depth = 0;
    const hasFiles = (e) => e.dataTransfer && Array.from(e.dataTransfer.types || []).includes("Files");
    zone.addEventListener("dragenter", (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      depth += 1;
      zone.classList.add("is-over");
    });
    zone.addEventListener("dragover", (e) => {
      if (!hasFiles(e)) return;
      e.preventDefault();
      e.dataTransfer.dropEffect = "copy";
    });
    zone.addEventListener("dragleave", () => {
      depth = Math.max(0, depth - 1);
      if (!depth) zone.classList.remove("is-over");
    });
    zone.addEventListener("drop", (e) => {
      e.preventDefault();
      depth = 0;
      zone.classList.remove("is-over");
      addFiles(e.dataTransfer.files);
    });
    // A file dropped beside the zone must not navigate away from the page.
    window.addEventListener("dragover", (e) => e.preventDefault());
    window.addEventListener("drop", (e) => e.preventDefault());
  }

  /* ------------------------------------------------------------------ */
  /* Models                                                              */
  /* ------------------------------------------------------------------ */

  function formatAccuracy(v) {
    return typeof v === "number" ? ` · ${(v * 100).toFixed(2)} %` : "";
  }

  async function loadModels() {
    const select = $("#model-select");
    const previous = select.value;
    try {
      const { data } = await api("GET", "/models");
      const models = (data && data.models) || [];
      select.replaceChildren();
      for (const m of models) {
        const group = document.createElement("optgroup");
        group.label = m.name;
        const active = new Option(
          m.active_version != null ? `${m.name} (active v${m.active_version})` : `${m.name} (no active version)`,
          m.name,
        );
        active.disabled = m.active_version == null;
        group.append(active);
        const versions = [...(m.versions || [])].sort((a, b) => b.version - a.version);
        for (const v of versions) {
          const family = v.family && v.family !== m.name ? ` · ${v.family}` : "";
          const mark = v.active ? " · active" : "";
          group.append(new Option(`${m.name}:${v.version}${family}${formatAccuracy(v.test_accuracy)}${mark}`,
            `${m.name}:${v.version}`));
        }
        select.append(group);
      }
      if (!models.length) {
        select.append(new Option("No models available", ""));
        select.disabled = true;
      } else {
        select.disabled = false;
        const values = Array.from(select.options).filter((o) => !o.disabled).map((o) => o.value);
        const preferred = [previous, "mlp", values[0]].find((v) => v && values.includes(v));
        if (preferred) select.value = preferred;
      }
    } catch (err) {
      select.replaceChildren(new Option("Models unavailable", ""));
      handleError(err, "#predict-error");
    }
    updatePredictButton();
  }

  /* ------------------------------------------------------------------ */
  /* Predictions                                                         */
  /* ------------------------------------------------------------------ */

  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  function updatePredictButton() {
    const button = $("#predict");
    button.disabled = state.busy;
    button.setAttribute("aria-busy", state.busy === "predict" ? "true" : "false");
    button.textContent = state.busy === "predict" ? "Predicting…" : "Predict";
    const compare = $("#compare");
    compare.disabled = state.busy;
    compare.setAttribute("aria-busy", state.busy === "compare" ? "true" : "false");
    compare.textContent = state.busy === "compare" ? "Comparing…" : "Compare all networks";
  }

  function statusLabel(prediction) {
    switch (prediction.status) {
      case "queued": return ["Queued…", "queued"];
      case "running": return ["Running…", "running"];
      default: return [prediction.status, prediction.status];
    }
  }

  /** What to send: the chosen files, else the drawing, as [{blob, name}]; null (and the reason shown) if nothing. */
  async function collectImages() {
    if (state.files.length) return state.files.map(({ file }) => ({ blob: file, name: file.name || "image" }));
    if (!state.hasInk) {
      failPrediction("Draw a digit first, or choose an image file.");
      canvas().focus();
      return null;
    }
    try {
      return [{ blob: await canvasBlob(), name: "drawing.png", drawn: true }];
    } catch (err) {
      failPrediction(err.message);
      return null;
    }
  }

  async function onPredict() {
    if (state.busy) return;
    hideInline("#predict-error");
    const model = $("#model-select").value;
    const images = await collectImages();
    if (!images) return;
    const form = new FormData();
    const previews = [];
    const names = [];
    for (const { blob, name, drawn } of images) {
      form.append("image", blob, name);
      previews.push(URL.createObjectURL(blob));
      if (!drawn) names.push(name);
    }
    if (model) form.append("model", model);
    form.append("wait", String(WAIT_SECONDS));

    const token = ++state.runToken;
    state.busy = "predict";
    updatePredictButton();
    $("#results").setAttribute("aria-busy", "true");
    setStatus(`Queued: sending ${previews.length} image${previews.length > 1 ? "s" : ""}…`, "queued");
    const started = performance.now();
    try {
      const { data } = await api("POST", "/predictions", { form });
      if (token !== state.runToken) return;
      let prediction = data;
      if (!isFinished(prediction)) prediction = await poll(prediction, token);
      if (token !== state.runToken) return;
      if (prediction.status === "failed") {
        revokeAll(previews);
        failPrediction(`The prediction failed on the server: ${prediction.error || "no reason given"}. Try again.`);
      } else {
        // One more read for the 28x28 images the network saw.
        let full = prediction;
        try {
          full = (await api("GET", `/predictions/${encodeURIComponent(prediction.id)}?include=preprocessed`)).data;
        } catch (err) {
          if (err instanceof ApiError && err.status === 401) throw err;
          full = prediction;   // the result itself is already here
        }
        if (token !== state.runToken) return;
        renderPrediction(full, previews);
        const elapsed = Math.round(performance.now() - started);
        setStatus(doneText(full, elapsed), "done");
        revealResults();
      }
      loadRecent();
      historyStale = true;
    } catch (err) {
      revokeAll(previews);
      if (token !== state.runToken) return;
      if (err instanceof ApiError && err.status === 401) {
        handleError(err, "#predict-error");
      } else {
        failPrediction(describeError(err, names));
      }
    } finally {
      if (token === state.runToken) {
        state.busy = false;
        updatePredictButton();
        $("#results").setAttribute("aria-busy", "false");
      }
    }
  }

  /* ------------------------------------------------------------------ */
  /* Compare mode: one image, every active network, side by side         */
  /* ------------------------------------------------------------------ */

  function clearCompare() {
    $("#results").classList.remove("compare-grid");
    $("#results-title").textContent = "Result";
  }

  /** Send the same image to each active model (one request each, in parallel) and show the answers side by side. */
  async function onCompare() {
    if (state.busy) return;
    hideInline("#predict-error");
    const images = await collectImages();
    if (!images) return;
    if (images.length > 1) {
      failPrediction("Compare takes one image: remove the others, or clear the files to compare your drawing.");
      return;
    }
    const [{ blob, name, drawn }] = images;
    const token = ++state.runToken;
    state.busy = "compare";
    updatePredictButton();
    clearResults();
    $("#results-title").textContent = "Compare";
    const container = $("#results");
    container.classList.add("compare-grid");
    container.setAttribute("aria-busy", "true");
    setStatus("Finding the active networks…", "queued");
    const started = performance.now();
    try {
      const { data } = await api("GET", "/models");
      if (token !== state.runToken) return;
      const active = ((data && data.models) || []).filter((m) => m.active_version != null);
      if (!active.length) {
        failPrediction("No network is active: an administrator activates one under “Models”.");
        return;
      }
      $("#results-empty").hidden = true;
      setStatus(`Asking ${active.length} network${active.length > 1 ? "s" : ""}…`, "running");
      const columns = active.map((m) => {
        const column = document.createElement("article");
        column.className = "compare-column";
        column.dataset.model = m.name;
        column.dataset.testid = "compare-column";
        column.setAttribute("aria-busy", "true");
        const title = document.createElement("h3");
        title.className = "compare-model";
        title.textContent = `${m.name}`;
        const wait = document.createElement("p");
        wait.className = "muted small compare-wait";
        wait.textContent = "Waiting for an answer…";
        column.append(title, wait);
        container.append(column);
        return column;
      });
      revealResults();
      const answers = await Promise.all(active.map(async (m, i) => {
        const form = new FormData();
        form.append("image", blob, name);
        form.append("model", m.name);
        form.append("wait", String(WAIT_SECONDS));
        try {
          let p = (await api("POST", "/predictions", { form })).data;
          if (!isFinished(p)) p = await poll(p, token, false);
          if (token === state.runToken) fillCompareColumn(columns[i], p, null);
          return p;
        } catch (err) {
          if (err instanceof ApiError && err.status === 401) throw err;
          if (token === state.runToken) fillCompareColumn(columns[i], null, describeError(err, drawn ? [] : [name]));
          return null;
        }
      }));
      if (token !== state.runToken) return;
      const said = answers.map((p, i) => (p && p.status === "succeeded" && p.results && p.results[0]
        ? `${active[i].name} ${p.results[0].digit}` : `${active[i].name} —`));
      const digits = new Set(answers.filter((p) => p && p.results && p.results[0]).map((p) => p.results[0].digit));
      const verdict = digits.size === 1 ? "they agree" : digits.size > 1 ? "they disagree" : "no answer";
      setStatus(`Compared in ${formatMs(performance.now() - started)}: ${said.join(", ")} — ${verdict}.`, "done");
      loadRecent();
      historyStale = true;
    } catch (err) {
      if (token !== state.runToken) return;
      if (err instanceof ApiError && err.status === 401) handleError(err, "#predict-error");
      else failPrediction(describeError(err));
    } finally {
      if (token === state.runToken) {
        state.busy = false;
        updatePredictButton();
        container.setAttribute("aria-busy", "false");
      }
    }
  }

  function fillCompareColumn(column, prediction, problem) {
    column.setAttribute("aria-busy", "false");
    column.querySelector(".compare-wait").remove();
    const r = prediction && prediction.status === "succeeded" && prediction.results ? prediction.results[0] : null;
    if (!r) {
      const p = document.createElement("p");
      p.className = "inline-error";
      p.textContent = problem || `The prediction failed on the server: ${(prediction && prediction.error) || "no reason given"}.`;
      column.append(p);
      return;
    }
    column.dataset.digit = String(r.digit);
    column.querySelector(".compare-model").textContent = `${prediction.model.name}:${prediction.model.version}`;
    column.dataset.version = String(prediction.model.version);
    const doubt = doubtOf(r);
    column.setAttribute("aria-label", `${prediction.model.name} version ${prediction.model.version}: digit ${r.digit}, `
      + `confidence ${percent(r.confidence)}${doubt && doubt.runnerUp !== null ? `, unsure, maybe ${doubt.runnerUp}` : ""}`);
    const head = document.createElement("div");
    head.className = "compare-head";
    const digit = document.createElement("div");
    digit.className = "result-digit";
    digit.dataset.testid = "compare-digit";
    digit.textContent = String(r.digit);
    const side = document.createElement("div");
    const conf = document.createElement("div");
    conf.className = "result-confidence";
    conf.textContent = percent(r.confidence);
    side.append(conf);
    const badge = doubtBadge(r);
    if (badge) side.append(badge);
    head.append(digit, side);
    const t = prediction.timings || {};
    const meta = document.createElement("p");
    meta.className = "muted small compare-meta";
    meta.textContent = typeof t.compute_ms === "number" ? `compute ${formatMs(t.compute_ms)}` : "";
    column.append(head, probabilityChart(r), meta);
  }

  /** A failed attempt: the old result and status go, the reason shows by the Predict button. */
  function failPrediction(message) {
    clearResults();
    setStatus("Failed — nothing predicted.", "failed");
    showInline("#predict-error", message);
  }

  /** On a narrow screen the result is below the fold: bring it up (without stealing focus from Predict). */
  function revealResults() {
    if (!window.matchMedia("(max-width: 820px)").matches) return;
    const reduce = window.matchMedia("(prefers-reduced-motion: reduce)").matches;
    $(".results-card").scrollIntoView({ block: "start", behavior: reduce ? "auto" : "smooth" });
  }

  function isFinished(p) {
    return p && (p.status === "succeeded" || p.status === "failed");
  }

  async function poll(prediction, token, report = true) {
    const id = prediction.id;
    if (!id) throw new Error("The server did not return a prediction id.");
    const deadline = performance.now() + POLL_TIMEOUT_MS;
    let current = prediction;
    let failures = 0;
    if (report) setStatus(...statusLabel(current));
    while (!isFinished(current)) {
      if (token !== state.runToken) return current;
      if (performance.now() > deadline) {
        throw new Error(`Still not finished after ${POLL_TIMEOUT_MS / 1000} s (prediction ${id}). Check Recent later.`);
      }
      await sleep(POLL_INTERVAL_MS);
      try {
        current = (await api("GET", `/predictions/${encodeURIComponent(id)}`)).data;
        failures = 0;
      } catch (err) {
        // Ride out brief hiccups (network, 429/503) but give up on real errors.
        const transient = err instanceof ApiError && (err.status === 0 || err.status === 429 || err.status >= 502);
        if (!transient || ++failures > 10) throw err;
        await sleep(err.retryAfter ? Math.min(err.retryAfter, 5) * 1000 : POLL_INTERVAL_MS);
        continue;
      }
      if (token !== state.runToken) return current;
      if (report && !isFinished(current)) setStatus(...statusLabel(current));
    }
    return current;
  }

  function doneText(p, elapsedMs) {
    const results = p.results || [];
    const model = p.model ? ` with ${p.model.name}:${p.model.version}` : "";
    let what;
    if (results.length === 1) {
      const doubt = doubtOf(results[0]);
      what = `predicted ${results[0].digit} (${percent(results[0].confidence)}${doubt ? `, unsure — maybe ${doubt.runnerUp}` : ""})`;
    } else {
      what = `predicted ${results.map((r) => r.digit).join(", ")}`;
    }
    const t = p.timings || {};
    const compute = typeof t.compute_ms === "number" ? `, compute ${formatMs(t.compute_ms)}` : "";
    return `Done: ${what}${model} in ${formatMs(elapsedMs)}${compute}.`;
  }

  function formatMs(ms) {
    return ms < 10 ? `${ms.toFixed(1)} ms` : ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
  }

  /** One decimal, never rounded up to 100 % (or down to 0 %) unless it is exactly that. */
  function percent(v) {
    if (typeof v !== "number" || !Number.isFinite(v)) return "–";
    if (v >= 1) return "100\u00a0%";
    if (v <= 0) return "0\u00a0%";
    let text = (v * 100).toFixed(1);
    if (text === "100.0") text = "99.9";
    if (text === "0.0") text = "<\u00a00.1";
    return `${text}\u00a0%`;
  }

  const DOUBT_TOP = 0.8;
  const DOUBT_MARGIN = 0.2;

  /** {runnerUp, top, second} when the answer is doubtful (low top probability or a close runner-up), else null. */
  function doubtOf(r) {
    const probs = Array.isArray(r.probabilities) ? r.probabilities : null;
    const top = typeof r.confidence === "number" ? r.confidence : (probs ? probs[r.digit] : null);
    if (typeof top !== "number") return null;
    let runnerUp = null;
    let second = 0;
    if (probs) {
      probs.forEach((p, d) => {
        if (d !== r.digit && typeof p === "number" && (runnerUp === null || p > second)) {
          runnerUp = d;
          second = p;
        }
      });
    }
    if (top >= DOUBT_TOP && top - second >= DOUBT_MARGIN) return null;
    return { runnerUp, top, second };
  }

  const HARD_TO_READ = 0.5;

  function doubtBadge(r) {
    const doubt = doubtOf(r);
    if (!doubt) return null;
    const badge = document.createElement("span");
    badge.className = "doubt";
    badge.dataset.testid = "doubt";
    badge.textContent = doubt.runnerUp !== null ? `unsure — maybe ${doubt.runnerUp}` : "unsure";
    badge.title = doubt.runnerUp !== null
      ? `Top answer ${percent(doubt.top)}, runner-up ${doubt.runnerUp} at ${percent(doubt.second)}`
      : `Top answer only ${percent(doubt.top)}`;
    return badge;
  }

  function revokeAll(urls) {
    for (const u of urls) if (u) URL.revokeObjectURL(u);
  }

  function clearResults() {
    revokeAll(state.resultUrls);
    state.resultUrls = [];
    clearCompare();
    $("#results").replaceChildren();
    $("#results-empty").hidden = false;
  }

  /** Show a finished prediction; `inputs` are object URLs of what was sent (may be empty). */
  function renderPrediction(prediction, inputs = []) {
    clearResults();
    state.resultUrls = inputs.slice();
    const container = $("#results");
    const results = prediction.results || [];
    $("#results-empty").hidden = results.length > 0;
    const header = document.createElement("p");
    header.className = "results-meta muted small";
    const bits = [];
    if (prediction.model) bits.push(`${prediction.model.name}:${prediction.model.version}`);
    if (prediction.created_at) bits.push(formatTime(prediction.created_at));
    const t = prediction.timings || {};
    if (typeof t.queue_ms === "number") bits.push(`queue ${formatMs(t.queue_ms)}`);
    if (typeof t.compute_ms === "number") bits.push(`compute ${formatMs(t.compute_ms)}`);
    header.textContent = bits.join(" · ");
    if (bits.length) container.append(header);

    results.forEach((r, i) => {
      const index = typeof r.index === "number" ? r.index : i;
      container.append(renderResult(prediction.id, r, index, inputs[index] || null, results.length));
    });
  }

  function renderResult(predictionId, r, index, inputUrl, count) {
    const card = document.createElement("article");
    card.className = "result";
    card.dataset.index = String(index);
    card.dataset.testid = "result";
    const doubt = doubtOf(r);
    card.setAttribute("aria-label", `${count > 1 ? `Image ${index + 1}: ` : ""}predicted digit ${r.digit}, confidence ${percent(r.confidence)}${doubt && doubt.runnerUp !== null ? `, unsure, maybe ${doubt.runnerUp}` : ""}`);

    // Headline: the digit and the confidence.
    const head = document.createElement("div");
    head.className = "result-head";
    const digit = document.createElement("div");
    digit.className = "result-digit";
    digit.textContent = String(r.digit);
    const side = document.createElement("div");
    side.className = "result-side";
    if (count > 1) {
      const label = document.createElement("div");
      label.className = "result-label muted small";
      label.textContent = `Image ${index + 1}`;
      side.append(label);
    }
    const conf = document.createElement("div");
    conf.className = "result-confidence";
    conf.textContent = percent(r.confidence);
    const confLabel = document.createElement("div");
    confLabel.className = "muted small";
    confLabel.textContent = "confidence";
    side.append(conf, confLabel);
    const badge = doubtBadge(r);
    if (badge) side.append(badge);
    if (typeof r.image_quality === "number" && r.image_quality < HARD_TO_READ) {
      // the preprocessing's own confidence: how cleanly the ink stood out of the paper
      const hint = document.createElement("div");
      hint.className = "doubt";
      hint.dataset.testid = "hard-to-read";
      hint.textContent = "hard to read — try a closer, evenly lit photo";
      hint.title = `Ink and paper separated at ${percent(r.image_quality)}`;
      side.append(hint);
    }
    head.append(digit, side);

    // What was sent, and what the network saw.
    const images = document.createElement("div");
    images.className = "result-images";
    if (inputUrl) images.append(figure(inputUrl, "input", "Your image", "Your image as sent"));
    if (r.preprocessed) {
      const fig = figure(`data:image/png;base64,${r.preprocessed}`, "preprocessed", "Network input (28×28)",
        "The 28 by 28 pixel image the network saw");
      images.append(fig);
    }
    head.append(images);

    card.append(head, probabilityChart(r), feedbackControl(predictionId, index, r.digit));
    return card;
  }

  function figure(src, cls, caption, alt) {
    const fig = document.createElement("figure");
    fig.className = `result-figure figure-${cls}`;
    const img = document.createElement("img");
    img.className = cls;
    img.src = src;
    img.alt = alt;
    img.width = 84;
    img.height = 84;
    const cap = document.createElement("figcaption");
    cap.className = "muted small";
    cap.textContent = caption;
    fig.append(img, cap);
    return fig;
  }

  function probabilityChart(r) {
    const probs = Array.isArray(r.probabilities) ? r.probabilities : [];
    const list = document.createElement("ol");
    list.className = "probabilities";
    list.setAttribute("aria-label", "Probability of each digit");
    for (let d = 0; d < 10; d++) {
      const p = typeof probs[d] === "number" ? probs[d] : 0;
      const li = document.createElement("li");
      li.className = "probability-bar";
      if (d === r.digit) li.classList.add("is-top");
      li.dataset.digit = String(d);
      li.dataset.value = String(p);
      li.title = `${d}: ${(p * 100).toFixed(2)}%`;
      const track = document.createElement("span");
      track.className = "bar-track";
      track.setAttribute("aria-hidden", "true");
      const fill = document.createElement("span");
      fill.className = "bar-fill";
      fill.style.height = `${Math.max(0, Math.min(1, p)) * 100}%`;
      track.append(fill);
      const label = document.createElement("span");
      label.className = "bar-label";
      label.textContent = String(d);
      const sr = document.createElement("span");
      sr.className = "visually-hidden";
      sr.textContent = `: ${percent(p)}`;
      label.append(sr);
      li.append(track, label);
      list.append(li);
    }
    return list;
  }

  function feedbackControl(predictionId, index, predicted, { current = null, onSaved = null, toggleText = "Wrong? Correct it" } = {}) {
    const box = document.createElement("div");
    box.className = "feedback";
    const toggle = document.createElement("button");
    toggle.type = "button";
    toggle.className = "button button-ghost small feedback-toggle";
    toggle.textContent = toggleText;
    toggle.dataset.testid = "feedback-toggle";
    toggle.setAttribute("aria-expanded", "false");
    const panel = document.createElement("div");
    panel.className = "feedback-panel";
    panel.hidden = true;
    const panelId = `feedback-${predictionId}-${index}`.replace(/[^A-Za-z0-9_-]/g, "_");
    panel.id = panelId;
    toggle.setAttribute("aria-controls", panelId);
    const prompt = document.createElement("p");
    prompt.className = "small";
    prompt.id = `${panelId}-label`;
    prompt.textContent = "What digit is it?";
    const group = document.createElement("div");
    group.className = "feedback-digits";
    group.setAttribute("role", "group");
    group.setAttribute("aria-labelledby", prompt.id);
    const note = document.createElement("p");
    note.className = "feedback-status small";
    note.setAttribute("role", "status");
    note.setAttribute("aria-live", "polite");

    const buttons = [];
    for (let d = 0; d < 10; d++) {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "feedback-digit";
      b.dataset.digit = String(d);
      b.textContent = String(d);
      b.setAttribute("aria-pressed", current === d ? "true" : "false");
      b.setAttribute("aria-label", `It is a ${d}`);
      b.addEventListener("click", async () => {
        for (const x of buttons) x.disabled = true;
        note.textContent = "Saving…";
        try {
          await api("POST", `/predictions/${encodeURIComponent(predictionId)}/feedback`, { json: { index, label: d } });
          for (const x of buttons) x.setAttribute("aria-pressed", x === b ? "true" : "false");
          note.textContent = d === predicted
            ? `Thanks — confirmed as ${d}.`
            : `Thanks — recorded as ${d}. It will help the next training run.`;
          note.classList.remove("is-error");
          if (onSaved) onSaved(d);
        } catch (err) {
          if (err instanceof ApiError && err.status === 401) {
            handleError(err, "#predict-error");
            return;
          }
          note.textContent = `Not saved: ${describeError(err)}`;
          note.classList.add("is-error");
        } finally {
          for (const x of buttons) x.disabled = false;
        }
      });
      buttons.push(b);
      group.append(b);
    }
    toggle.addEventListener("click", () => {
      const open = panel.hidden;
      panel.hidden = !open;
      toggle.setAttribute("aria-expanded", open ? "true" : "false");
      if (open) buttons[0].focus();
    });
    panel.append(prompt, group, note);
    box.append(toggle, panel);
    return box;
  }

  /* ------------------------------------------------------------------ */
  /* Recent predictions                                                  */
  /* ------------------------------------------------------------------ */

  function parseTime(value) {
    if (!value) return null;
    let s = String(value);
    // A timestamp without an offset is UTC.
    if (/T\d{2}:\d{2}(:\d{2}(\.\d+)?)?$/.test(s)) s += "Z";
    const t = Date.parse(s);
    return Number.isNaN(t) ? null : new Date(t);
  }

  function formatTime(value) {
    const d = parseTime(value);
    if (!d) return "";
    const secs = Math.round((Date.now() - d.getTime()) / 1000);
    if (secs < 10) return "just now";
    if (secs < 60) return `${secs} s ago`;
    if (secs < 3600) return `${Math.floor(secs / 60)} min ago`;
    const sameDay = new Date().toDateString() === d.toDateString();
    return sameDay
      ? d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
      : d.toLocaleString([], { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
  }

  let recentRequest = 0;

  async function loadRecent() {
    const mine = ++recentRequest;
    try {
      const { data } = await api("GET", `/predictions?limit=${RECENT_LIMIT}`);
      if (mine !== recentRequest || !state.user) return;
      hideInline("#recent-error");
      renderRecent((data && data.predictions) || []);
    } catch (err) {
      if (mine === recentRequest) handleError(err, "#recent-error");
    }
  }

  function renderRecent(predictions) {
    const list = $("#recent");
    list.replaceChildren();
    $("#recent-empty").hidden = predictions.length > 0;
    for (const p of predictions.slice(0, RECENT_LIMIT)) {
      const li = document.createElement("li");
      li.className = "recent-item";
      li.dataset.id = p.id;
      li.dataset.status = p.status;
      const button = document.createElement("button");
      button.type = "button";
      button.className = "recent-button";

      const digits = document.createElement("span");
      digits.className = "recent-digits";
      const results = p.results || [];
      if (p.status === "succeeded" && results.length) {
        const shown = results.slice(0, 4).map((r) => r.digit).join(" ");
        digits.textContent = results.length > 4 ? `${shown} …` : shown;
      } else {
        digits.textContent = p.status === "failed" ? "✕" : "…";
        digits.classList.add("is-pending");
      }
      const meta = document.createElement("span");
      meta.className = "recent-meta";
      const model = document.createElement("span");
      model.className = "recent-model";
      model.textContent = p.model ? `${p.model.name}:${p.model.version}` : "";
      const when = document.createElement("time");
      when.className = "recent-time muted small";
      when.dateTime = p.created_at || "";
      const d = parseTime(p.created_at);
      if (d) when.title = d.toLocaleString();
      when.textContent = formatTime(p.created_at);
      meta.append(model, when);
      if (p.status !== "succeeded") {
        const st = document.createElement("span");
        st.className = `recent-status muted small status-${p.status}`;
        st.textContent = p.status;
        meta.append(st);
      }
      const summary = p.status === "succeeded" && results.length
        ? `Predicted ${results.map((r) => r.digit).join(", ")}`
        : `Prediction ${p.status}`;
      button.setAttribute("aria-label", `${summary}, ${model.textContent}, ${when.textContent}. Show details.`);
      button.append(digits, meta);
      button.addEventListener("click", () => showStored(p.id));
      li.append(button);
      list.append(li);
    }
  }

  async function showStored(id) {
    hideInline("#predict-error");
    try {
      const { data } = await api("GET", `/predictions/${encodeURIComponent(id)}?include=preprocessed`);
      if (data.status === "failed") {
        failPrediction(`That prediction failed on the server: ${data.error || "no reason given"}.`);
        return;
      }
      if (!isFinished(data)) {
        setStatus(...statusLabel(data));
        return;
      }
      renderPrediction(data, []);
      setStatus(`Showing ${data.model ? `${data.model.name}:${data.model.version} ` : ""}prediction from ${formatTime(data.created_at) || "earlier"}.`, "done");
      $("#results-title").scrollIntoView({ block: "nearest", behavior: "smooth" });
    } catch (err) {
      handleError(err, "#predict-error");
    }
  }

  /* ------------------------------------------------------------------ */
  /* Sections: #draw, #history, #keys                                    */
  /* ------------------------------------------------------------------ */

  /**
   * The sections of the page, by their #hash. Each has a container, a title, a heading that takes the
   * focus when it opens, and hooks: show(changed) when it is displayed, signOut() to forget what the
   * previous user saw. Other scripts add theirs with DigitServe.registerView (see models.js, account.js).
   */
  const VIEWS = {
    draw: { selector: "#app-view", title: "Predict", heading: "#input-title", show: () => resizeCanvas() },
    history: {
      selector: "#history-view", title: "History", heading: "#history-title",
      show: (changed) => { if (historyStale || changed) loadHistory(true); },
    },
    keys: {
      selector: "#keys-view", title: "API keys", heading: "#keys-new-title",
      show: (changed) => { if (changed) loadKeys(); },
    },
  };
  let historyStale = true;
  let currentRoute = null;

  function registerView(name, view) {
    VIEWS[name] = view;
  }

  function route(moveFocus = false) {
    const name = (location.hash || "").replace(/^#/, "");
    const wanted = VIEWS[name] && !(VIEWS[name].adminOnly && !isAdmin()) ? name : "draw";
    for (const [key, view] of Object.entries(VIEWS)) $(view.selector).hidden = key !== wanted;
    for (const tab of document.querySelectorAll(".tab")) {
      if (tab.dataset.route === wanted) tab.setAttribute("aria-current", "page");
      else tab.removeAttribute("aria-current");
    }
    const view = VIEWS[wanted];
    document.title = `${view.title} — DigitServe`;
    const changed = wanted !== currentRoute;
    currentRoute = wanted;
    if (view.show) view.show(changed);
    if (moveFocus && changed) {
      const el = $(view.heading);
      if (!el.hasAttribute("tabindex")) el.setAttribute("tabindex", "-1");
      el.focus({ preventScroll: true });
      window.scrollTo(0, 0);
    }
  }

  function isAdmin() {
    return !!(state.user && state.user.role === "admin");
  }

  /* ------------------------------------------------------------------ */
  /* Password rules, checked as you type (the server has the last word)  */
  /* ------------------------------------------------------------------ */

  const COMMON = new Set(["password", "password1", "password123", "123456789", "1234567890", "qwertyuiop",
    "iloveyou", "letmein123", "welcome123", "admin12345", "passw0rd", "abc123456"]);

  function checkPasswordRules() {
    const pw = $("#login-password").value;
    const local = ($("#login-email").value.trim().split("@")[0] || "").toLowerCase();
    const rules = {
      length: pw.length >= 10,
      distinct: new Set(pw).size >= 5,
      email: !(local.length >= 3 && pw.toLowerCase().includes(local)),
      common: !COMMON.has(pw.toLowerCase()),
    };
    for (const li of document.querySelectorAll("#password-rules li")) {
      const state_ = pw ? (rules[li.dataset.rule] ? "ok" : "bad") : "";
      if (state_) li.dataset.state = state_;
      else delete li.dataset.state;
    }
  }

  /* ------------------------------------------------------------------ */
  /* History                                                             */
  /* ------------------------------------------------------------------ */

  const HISTORY_PAGE = 10;
  const histState = { cursor: null, request: 0, loading: false };

  function resetHistory() {
    histState.cursor = null;
    histState.request += 1;
    histState.loading = false;
    historyStale = true;
    $("#history").replaceChildren();
    $("#history-empty").hidden = true;
    $("#history-more").hidden = true;
    $("#history-status").textContent = "";
  }

  async function loadHistory(fresh) {
    if (histState.loading && !fresh) return;
    const mine = ++histState.request;
    histState.loading = true;
    hideInline("#history-error");
    const list = $("#history");
    const more = $("#history-more");
    list.setAttribute("aria-busy", "true");
    more.disabled = true;
    more.textContent = "Loading…";
    $("#history-status").textContent = "Loading predictions…";
    const cursor = fresh ? null : histState.cursor;
    try {
      const q = `limit=${HISTORY_PAGE}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`;
      const { data } = await api("GET", `/predictions?${q}`);
      if (mine !== histState.request || !state.user) return;
      const predictions = (data && data.predictions) || [];
      if (fresh) list.replaceChildren();
      historyStale = false;
      histState.cursor = data.next_cursor || null;
      for (const p of predictions) list.append(historyItem(p));
      $("#history-empty").hidden = list.children.length > 0;
      more.hidden = !histState.cursor;
      const shown = list.children.length;
      $("#history-status").textContent = shown
        ? `${shown} prediction${shown > 1 ? "s" : ""} shown${histState.cursor ? "" : " — that is all"}.`
        : "";
      loadThumbnails(predictions.filter((p) => p.status === "succeeded").map((p) => p.id), mine);
    } catch (err) {
      if (mine !== histState.request) return;
      $("#history-status").textContent = "";
      handleError(err, "#history-error");
    } finally {
      if (mine === histState.request) {
        histState.loading = false;
        list.setAttribute("aria-busy", "false");
        more.disabled = false;
        more.textContent = "Load more";
      }
    }
  }

  /** The 28x28 images come with a per-prediction read (include=preprocessed), a few at a time. */
  async function loadThumbnails(ids, mine) {
    const queue = ids.slice();
    const worker = async () => {
      while (queue.length) {
        const id = queue.shift();
        if (mine !== histState.request) return;
        try {
          const { data } = await api("GET", `/predictions/${encodeURIComponent(id)}?include=preprocessed`);
          if (mine !== histState.request) return;
          for (const r of data.results || []) {
            const img = document.querySelector(`#history [data-id="${CSS.escape(id)}"] [data-index="${r.index}"] img.thumb`);
            if (img && r.preprocessed) {
              img.src = `data:image/png;base64,${r.preprocessed}`;
              img.classList.remove("is-loading");
            }
          }
        } catch (err) {
          if (err instanceof ApiError && err.status === 401) { handleError(err, "#history-error"); return; }
          // A missing thumbnail is not worth an error message: the row stays as it is.
        }
      }
    };
    await Promise.all([worker(), worker(), worker()]);
  }

  function correctionText(label, digit) {
    if (label == null) return "";
    return label === digit ? `confirmed as ${label}` : `corrected to ${label}`;
  }

  function historyItem(p) {
    const li = document.createElement("li");
    li.className = "history-item";
    li.dataset.id = p.id;
    li.dataset.status = p.status;
    li.dataset.testid = "history-item";

    const meta = document.createElement("p");
    meta.className = "history-meta small";
    const when = document.createElement("time");
    when.dateTime = p.created_at || "";
    const d = parseTime(p.created_at);
    when.textContent = d ? d.toLocaleString([], { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit" }) : "";
    const model = document.createElement("span");
    model.className = "history-model";
    model.textContent = p.model ? `${p.model.name}:${p.model.version}` : "";
    meta.append(when, model);
    if (p.status !== "succeeded") {
      const st = document.createElement("span");
      st.className = `status-${p.status}`;
      st.textContent = p.status === "failed" ? `failed${p.error ? `: ${p.error}` : ""}` : p.status;
      meta.append(st);
    }
    li.append(meta);

    const rows = document.createElement("ul");
    rows.className = "history-results";
    const results = p.status === "succeeded" ? (p.results || []) : [];
    results.forEach((r, i) => rows.append(historyResult(p, r, typeof r.index === "number" ? r.index : i, results.length)));
    if (results.length) li.append(rows);
    return li;
  }

  function historyResult(p, r, index, count) {
    const row = document.createElement("li");
    row.className = "history-result";
    row.dataset.index = String(index);

    const img = document.createElement("img");
    img.className = "thumb is-loading";
    img.width = 56;
    img.height = 56;
    img.alt = `The 28 by 28 image the network saw${count > 1 ? ` (image ${index + 1})` : ""}`;
    img.src = "data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7";

    const body = document.createElement("div");
    body.className = "history-body";
    const line = document.createElement("p");
    line.className = "history-answer";
    const digit = document.createElement("span");
    digit.className = "history-digit";
    digit.dataset.testid = "history-digit";
    digit.textContent = String(r.digit);
    const conf = document.createElement("span");
    conf.className = "history-confidence";
    conf.textContent = percent(r.confidence);
    line.append(digit, conf);
    const badge = doubtBadge(r);
    if (badge) line.append(badge);
    const fix = document.createElement("span");
    fix.className = "correction";
    fix.dataset.testid = "correction";
    const setFix = (label) => {
      fix.textContent = correctionText(label, r.digit);
      fix.hidden = label == null;
      fix.classList.toggle("is-changed", label != null && label !== r.digit);
      row.dataset.correction = label == null ? "" : String(label);
    };
    setFix(typeof r.feedback_label === "number" ? r.feedback_label : null);
    line.append(fix);
    body.append(line);
    if (count > 1) {
      const which = document.createElement("p");
      which.className = "muted small history-which";
      which.textContent = `Image ${index + 1} of ${count}`;
      body.append(which);
    }
    const corrected = typeof r.feedback_label === "number";
    const control = feedbackControl(p.id, index, r.digit, {
      current: corrected ? r.feedback_label : null,
      onSaved: (label) => {
        setFix(label);
        control.querySelector(".feedback-toggle").textContent = "Change correction";
      },
      toggleText: corrected ? "Change correction" : "Correct",
    });
    body.append(control);
    row.append(img, body);
    return row;
  }

  /* ------------------------------------------------------------------ */
  /* API keys                                                            */
  /* ------------------------------------------------------------------ */

  let keysRequest = 0;

  async function loadKeys() {
    const mine = ++keysRequest;
    const list = $("#keys");
    list.setAttribute("aria-busy", "true");
    try {
      const { data } = await api("GET", "/keys");
      if (mine !== keysRequest || !state.user) return;
      hideInline("#keys-error");
      renderKeys((data && data.keys) || []);
    } catch (err) {
      if (mine === keysRequest) handleError(err, "#keys-error");
    } finally {
      if (mine === keysRequest) list.setAttribute("aria-busy", "false");
    }
  }

  function absoluteTime(value) {
    const d = parseTime(value);
    return d ? d.toLocaleString([], { year: "numeric", month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" }) : "";
  }

  function renderKeys(keys) {
    const list = $("#keys");
    list.replaceChildren();
    $("#keys-empty").hidden = keys.length > 0;
    // Active keys first, each group newest first.
    const sorted = keys.slice().sort((a, b) => (a.revoked - b.revoked) || String(b.created_at).localeCompare(String(a.created_at)));
    for (const k of sorted) {
      const li = document.createElement("li");
      li.className = "key-item";
      li.dataset.keyId = k.key_id;
      li.dataset.testid = "key-item";
      li.dataset.revoked = k.revoked ? "true" : "false";

      const head = document.createElement("div");
      head.className = "key-head";
      const name = document.createElement("strong");
      name.className = "key-name";
      name.textContent = k.name || "api key";
      const stateEl = document.createElement("span");
      stateEl.className = `key-state ${k.revoked ? "is-revoked" : "is-active"}`;
      stateEl.dataset.testid = "key-state";
      stateEl.textContent = k.revoked ? "revoked" : "active";
      head.append(name, stateEl);

      const id = document.createElement("code");
      id.className = "key-id";
      id.textContent = k.key_id;

      const facts = document.createElement("dl");
      facts.className = "key-meta small";
      const fact = (label, value, cls) => {
        const dt = document.createElement("dt");
        dt.textContent = label;
        const dd = document.createElement("dd");
        dd.textContent = value;
        if (cls) dd.className = cls;
        facts.append(dt, dd);
      };
      fact("Scopes", (k.scopes || []).join(", "));
      fact("Created", absoluteTime(k.created_at));
      fact("Last used", k.last_used_at ? absoluteTime(k.last_used_at) : "never", "key-last-used");

      li.append(head, id, facts);
      if (!k.revoked) {
        const revoke = document.createElement("button");
        revoke.type = "button";
        revoke.className = "button button-danger-ghost small";
        revoke.dataset.testid = "key-revoke";
        revoke.textContent = "Revoke…";
        revoke.setAttribute("aria-label", `Revoke key ${k.name || k.key_id} (${k.key_id})`);
        revoke.addEventListener("click", () => askRevoke(k, revoke));
        li.append(revoke);
      }
      list.append(li);
    }
  }

  function hideSecret() {
    $("#key-secret").hidden = true;
    $("#new-key-secret").textContent = "";
    $("#snippet-cli").textContent = "";
    $("#snippet-curl").textContent = "";
    $("#copy-status").textContent = "";
    $("#key-form").hidden = false;
  }

  function shellQuote(value) {
    return /^[A-Za-z0-9_@%+=:,./-]+$/.test(value) ? value : `'${String(value).replace(/'/g, "'\\''")}'`;
  }

  function defaultModelName() {
    const opt = Array.from($("#model-select").options).find((o) => o.value && !o.value.includes(":") && !o.disabled);
    return opt ? opt.value : "mlp";
  }

  function showSecret(created) {
    $("#new-key-id").textContent = created.key_id;
    $("#new-key-secret").textContent = created.secret;
    const origin = location.origin;
    $("#snippet-cli").textContent = [
      `export DIGITSERVE_URL=${shellQuote(origin)}`,
      `export DIGITSERVE_KEY_ID=${shellQuote(created.key_id)}`,
      `export DIGITSERVE_SECRET=${shellQuote(created.secret)}`,
      `digitserve predict seven.png --model ${shellQuote(defaultModelName())} --wait 5`,
    ].join("\n");
    $("#snippet-curl").textContent = [
      "# after the exports above; sign as README.md, \"Signing API requests (DS1-HMAC-SHA256)\" shows",
      "BODY=$(printf '{\"images\": [\"%s\"]}' \"$(base64 -w0 seven.png)\")",
      "curl -sS -X POST \"$DIGITSERVE_URL/api/v1/predictions?wait=5\" \\",
      "  -H 'Content-Type: application/json' --data-binary \"$BODY\" \\",
      `  -H "Authorization: DS1-HMAC-SHA256 KeyId=${created.key_id},Signature=$SIGNATURE" \\`,
      "  -H \"X-DS-Date: $DATE\" -H \"X-DS-Nonce: $NONCE\" -H \"X-DS-Content-SHA256: $BODY_SHA\"",
    ].join("\n");
    $("#copy-status").textContent = "";
    $("#key-form").hidden = true;
    const box = $("#key-secret");
    box.hidden = false;
    box.focus({ preventScroll: true });
    box.scrollIntoView({ block: "nearest" });
  }

  async function onCreateKey(event) {
    event.preventDefault();
    hideInline("#key-error");
    const name = $("#key-name").value.trim();
    const scopes = [];
    if ($("#scope-predict").checked) scopes.push("predict");
    if (state.user && state.user.role === "admin" && $("#scope-admin").checked) scopes.push("admin");
    if (!scopes.length) {
      showInline("#key-error", "Choose at least one scope.");
      $("#scope-predict").focus();
      return;
    }
    if (name.length > 100) {
      showInline("#key-error", "The name can be at most 100 characters.");
      $("#key-name").focus();
      return;
    }
    const button = $("#key-create");
    button.disabled = true;
    button.textContent = "Creating…";
    try {
      const { data } = await api("POST", "/keys", { json: { name: name || "api key", scopes } });
      $("#key-name").value = "";
      showSecret(data);
      loadKeys();
    } catch (err) {
      handleError(err, "#key-error");
    } finally {
      button.disabled = false;
      button.textContent = "Create key";
    }
  }

  async function onCopy(event) {
    const button = event.currentTarget;
    const text = $(button.dataset.copy).textContent;
    let ok = false;
    try {
      await navigator.clipboard.writeText(text);
      ok = true;
    } catch (_) {
      // No clipboard permission: select the text so Ctrl+C / long-press copies it.
      const range = document.createRange();
      range.selectNodeContents($(button.dataset.copy));
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
    }
    $("#copy-status").textContent = ok ? "Copied to the clipboard." : "Selected: press Ctrl+C (or ⌘C) to copy.";
  }

  let revoking = null;   // {key, button}

  function askRevoke(key, button) {
    revoking = { key, button };
    $("#revoke-text").textContent = `“${key.name || "api key"}” (${key.key_id}) stops working at once: `
      + "every program using it gets “401 unauthorized”. This cannot be undone.";
    const dialog = $("#revoke-dialog");
    dialog.returnValue = "";
    dialog.showModal();
  }

  async function onRevokeDialogClose() {
    const dialog = $("#revoke-dialog");
    const pending = revoking;
    revoking = null;
    if (!pending) return;
    if (dialog.returnValue !== "revoke") {
      pending.button.focus();
      return;
    }
    hideInline("#keys-error");
    pending.button.disabled = true;
    pending.button.textContent = "Revoking…";
    try {
      await api("DELETE", `/keys/${encodeURIComponent(pending.key.key_id)}`);
      await loadKeys();
      $("#keys-title").setAttribute("tabindex", "-1");
      $("#keys-title").focus();
    } catch (err) {
      pending.button.disabled = false;
      pending.button.textContent = "Revoke…";
      handleError(err, "#keys-error");
    }
  }

  /* ------------------------------------------------------------------ */
  /* Wiring                                                              */
  /* ------------------------------------------------------------------ */

  function init() {
    $("#login-form").addEventListener("submit", onAuthSubmit);
    $("#register-submit").addEventListener("click", () => {
      $("#login-password").setAttribute("autocomplete", "new-password");
    });
    $("#login-submit").addEventListener("click", () => {
      $("#login-password").setAttribute("autocomplete", "current-password");
    });
    $("#logout").addEventListener("click", onLogout);
    $("#login-password").addEventListener("input", checkPasswordRules);
    $("#login-email").addEventListener("input", checkPasswordRules);

    const c = canvas();
    resizeCanvas();
    c.addEventListener("pointerdown", onPointerDown);
    c.addEventListener("pointermove", onPointerMove);
    c.addEventListener("pointerup", onPointerUp);
    c.addEventListener("pointercancel", onPointerUp);
    c.addEventListener("lostpointercapture", onPointerUp);
    c.addEventListener("keydown", onCanvasKey);
    c.addEventListener("blur", () => { $("#pen-cursor").hidden = true; });
    c.addEventListener("contextmenu", (e) => e.preventDefault());
    $("#clear").addEventListener("click", () => { clearCanvas(); hideInline("#predict-error"); });
    // Redraw crisply when the page moves to a screen with another pixel ratio (or zoom changes).
    window.addEventListener("resize", () => resizeCanvas());

    const input = $("#file-input");
    input.addEventListener("change", () => {
      addFiles(input.files);
      input.value = "";   // choosing the same file again still fires "change"
    });
    $("#clear-files").addEventListener("click", () => { clearFiles(); input.focus(); });
    setupDropzone();

    $("#predict").addEventListener("click", onPredict);
    $("#compare").addEventListener("click", onCompare);
    $("#recent-refresh").addEventListener("click", () => loadRecent());
    window.addEventListener("hashchange", () => { if (state.user) route(true); });
    $("#history-refresh").addEventListener("click", () => loadHistory(true));
    $("#history-more").addEventListener("click", () => loadHistory(false));
    $("#key-form").addEventListener("submit", onCreateKey);
    $("#keys-refresh").addEventListener("click", loadKeys);
    $("#key-secret-done").addEventListener("click", () => { hideSecret(); $("#key-name").focus(); });
    for (const b of document.querySelectorAll("button.copy")) b.addEventListener("click", onCopy);
    $("#revoke-dialog").addEventListener("close", onRevokeDialogClose);
    // Keep the relative times fresh.
    setInterval(() => {
      for (const t of document.querySelectorAll("#recent time[datetime]")) {
        t.textContent = formatTime(t.dateTime);
      }
    }, 30000);

    boot();
  }

  /* ------------------------------------------------------------------ */
  /* What the other scripts of the page (models.js, account.js) build on */
  /* ------------------------------------------------------------------ */

  window.DigitServe = {
    api, ApiError, describeError, showInline, hideInline, handleError, percent, absoluteTime, formatTime,
    registerView, isAdmin, route, showSignedOut,
    user: () => state.user,
    setCsrf: (token) => { state.csrf = token; },
  };

  // The deferred scripts after this one register their views first; DOMContentLoaded waits for them.
  if (document.readyState === "complete") {
    init();
  } else {
    document.addEventListener("DOMContentLoaded", init);
  }
})();
