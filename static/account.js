/* DigitServe account page: change the password, sign out everywhere, delete the account; for
 * administrators, the users list (disable / re-enable, grant / revoke admin) and the audit log.
 */
(() => {
  "use strict";

  const ds = window.DigitServe;
  const $ = (sel) => document.querySelector(sel);
  const usersState = { request: 0, pending: null };

  function show() {
    const user = ds.user();
    $("#account-email").textContent = user.email;
    $("#account-role").textContent = user.role === "admin" ? "administrator" : "user";
    $("#users-card").hidden = user.role !== "admin";
    if (user.role === "admin") loadUsers();
  }

  function busy(button, text) {
    button.dataset.label = button.dataset.label || button.textContent;
    button.disabled = true;
    button.setAttribute("aria-busy", "true");
    button.textContent = text;
  }

  function idle(button) {
    button.disabled = false;
    button.setAttribute("aria-busy", "false");
    if (button.dataset.label) button.textContent = button.dataset.label;
  }

  /* ------------------------------------------------------------ password */

  async function onChangePassword(event) {
    event.preventDefault();
    ds.hideInline("#password-error");
    $("#password-status").textContent = "";
    const current = $("#current-password");
    const next = $("#new-password");
    if (!current.value) {
      ds.showInline("#password-error", "Enter your current password.");
      current.focus();
      return;
    }
    if (next.value.length < 10) {
      ds.showInline("#password-error", "The new password needs at least 10 characters.");
      next.focus();
      return;
    }
    const button = $("#password-submit");
    busy(button, "Changing…");
    try {
      const { data } = await ds.api("PUT", "/account/password",
        { json: { current_password: current.value, new_password: next.value } });
      ds.setCsrf(data.csrf_token);
      current.value = "";
      next.value = "";
      $("#password-status").textContent = "Password changed. Your other sessions were signed out.";
    } catch (err) {
      ds.handleError(err, "#password-error");
      (err && err.code === "weak_password" ? next : current).focus();
    } finally {
      idle(button);
    }
  }

  /* ------------------------------------------------------------ sessions */

  async function onSignOutAll() {
    ds.hideInline("#sessions-error");
    const button = $("#sign-out-all");
    busy(button, "Signing out…");
    try {
      await ds.api("DELETE", "/sessions?all=1");
      idle(button);
      ds.showSignedOut();
      $("#auth-status").textContent = "Signed out of every session.";
      $("#login-email").focus();
    } catch (err) {
      idle(button);
      ds.handleError(err, "#sessions-error");
    }
  }

  /* ------------------------------------------------------ delete account */

  function openDelete() {
    ds.hideInline("#delete-error");
    $("#delete-password").value = "";
    $("#delete-dialog").showModal();
    $("#delete-password").focus();
  }

  function closeDelete() {
    $("#delete-dialog").close();
  }

  async function onDelete(event) {
    event.preventDefault();
    ds.hideInline("#delete-error");
    const password = $("#delete-password").value;
    if (!password) {
      ds.showInline("#delete-error", "Type your password to confirm.");
      $("#delete-password").focus();
      return;
    }
    const button = $("#delete-confirm");
    busy(button, "Deleting…");
    try {
      const { data } = await ds.api("DELETE", "/account", { json: { password } });
      idle(button);
      $("#delete-dialog").close();
      ds.showSignedOut();
      const n = data.deleted_predictions;
      $("#auth-status").textContent = `Your account was deleted, with ${n} prediction${n === 1 ? "" : "s"}.`;
      $("#login-email").focus();
    } catch (err) {
      idle(button);
      if (err instanceof ds.ApiError && (err.status === 401 || err.code === "account_disabled")) {
        $("#delete-dialog").close();
      }
      ds.handleError(err, "#delete-error");
      if (!$("#delete-dialog").open) return;
      $("#delete-password").focus();
    }
  }

  /* --------------------------------------------------------- admin: users */

  async function loadUsers() {
    const mine = ++usersState.request;
    const body = $("#users tbody");
    $("#users").setAttribute("aria-busy", "true");
    $("#users-status").textContent = "Loading users…";
    try {
      const [users, audit] = await Promise.all([ds.api("GET", "/users"), ds.api("GET", "/audit?limit=20")]);
      if (mine !== usersState.request || !ds.user()) return;
      ds.hideInline("#users-error");
      body.replaceChildren(...users.data.users.map(userRow));
      filterUsers();
      renderAudit(audit.data.entries);
      $("#users-status").textContent = "";
    } catch (err) {
      if (mine !== usersState.request) return;
      $("#users-status").textContent = "";
      ds.handleError(err, "#users-error");
    } finally {
      if (mine === usersState.request) $("#users").setAttribute("aria-busy", "false");
    }
  }

  /** Show only the accounts whose email contains what is typed in "Find by email". */
  function filterUsers() {
    const needle = $("#users-filter").value.trim().toLowerCase();
    let shown = 0;
    const rows = document.querySelectorAll("#users tbody tr");
    for (const tr of rows) {
      tr.hidden = !!needle && !tr.dataset.email.includes(needle);
      if (!tr.hidden) shown += 1;
    }
    if (needle) $("#users-status").textContent = `${shown} of ${rows.length} accounts match.`;
  }

  function cell(text, cls, label) {
    const td = document.createElement("td");
    td.textContent = text;
    if (cls) td.className = cls;
    if (label) td.dataset.label = label;   // shown before the value when the table folds into cards (phones)
    return td;
  }

  function userRow(u) {
    const me = ds.user();
    const self = me && me.id === u.id;
    const tr = document.createElement("tr");
    tr.dataset.userId = String(u.id);
    tr.dataset.email = u.email;
    tr.dataset.testid = "user-row";
    const email = document.createElement("th");
    email.scope = "row";
    email.className = "user-email";
    email.textContent = self ? `${u.email} (you)` : u.email;
    const state = document.createElement("span");
    state.className = `key-state ${u.disabled ? "is-revoked" : "is-active"}`;
    state.dataset.testid = "user-state";
    state.textContent = u.disabled ? "disabled" : "active";
    const stateCell = cell("", "", "State");
    stateCell.append(state);
    const roleCell = cell(u.role === "admin" ? "admin" : "user", "", "Role");
    roleCell.dataset.testid = "user-role";
    tr.append(email, roleCell, stateCell, cell(String(u.predictions), "num", "Predictions"),
      cell(ds.absoluteTime(u.created_at), "", "Created"));
    const actions = document.createElement("td");
    actions.className = "actions";
    if (!self) {   // the server refuses these for oneself too (409)
      actions.append(actionButton(u, u.disabled ? "enable" : "disable"));
      actions.append(actionButton(u, u.role === "admin" ? "revoke_admin" : "grant_admin"));
    } else {
      actions.classList.add("muted");
      actions.textContent = "—";
    }
    tr.append(actions);
    return tr;
  }

  const ACTIONS = {
    disable: { label: "Disable…", change: { disabled: true }, verb: "Disable",
      text: (u) => `${u.email} is signed out at once and cannot sign in; their API keys stop working until the account is re-enabled.` },
    enable: { label: "Re-enable…", change: { disabled: false }, verb: "Re-enable",
      text: (u) => `${u.email} can sign in again and their API keys work again.` },
    grant_admin: { label: "Make admin…", change: { role: "admin" }, verb: "Make administrator",
      text: (u) => `${u.email} will be able to activate model versions and administer every account.` },
    revoke_admin: { label: "Revoke admin…", change: { role: "user" }, verb: "Revoke administrator",
      text: (u) => `${u.email} keeps the account but can no longer activate models or administer accounts.` },
  };

  function actionButton(u, action) {
    const a = ACTIONS[action];
    const b = document.createElement("button");
    b.type = "button";
    b.className = `button small ${action === "disable" ? "button-danger-ghost" : ""}`;
    b.dataset.testid = `user-${action.replace("_", "-")}`;
    b.textContent = a.label;
    b.setAttribute("aria-label", `${a.verb} ${u.email}`);
    b.addEventListener("click", () => askUserChange(u, action, b));
    return b;
  }

  function askUserChange(u, action, button) {
    const a = ACTIONS[action];
    usersState.pending = { u, action, button };
    $("#user-dialog-title").textContent = `${a.verb}: ${u.email}?`;
    $("#user-dialog-text").textContent = `${a.text(u)} The change is logged with your name.`;
    $("#user-confirm").textContent = a.verb;
    $("#user-confirm").className = `button ${action === "disable" ? "button-danger" : "button-primary"}`;
    const dialog = $("#user-dialog");
    dialog.returnValue = "";
    dialog.showModal();
  }

  async function onUserDialogClose() {
    const pending = usersState.pending;
    usersState.pending = null;
    if (!pending) return;
    if ($("#user-dialog").returnValue !== "confirm") {
      pending.button.focus();
      return;
    }
    ds.hideInline("#users-error");
    busy(pending.button, "Saving…");
    try {
      const { data } = await ds.api("PATCH", `/users/${pending.u.id}`, { json: ACTIONS[pending.action].change });
      await loadUsers();
      $("#users-status").textContent = `${data.email}: ${data.disabled ? "disabled" : "active"}, ${data.role}.`;
      const again = document.querySelector(`#users tr[data-user-id="${data.id}"] .actions button`);
      (again || $("#users-title")).focus();
    } catch (err) {
      idle(pending.button);
      ds.handleError(err, "#users-error");
    }
  }

  const AUDIT_WORDS = { disable: "disabled", enable: "re-enabled", grant_admin: "made administrator",
    revoke_admin: "removed administrator from", delete_account: "deleted the account of" };

  function renderAudit(entries) {
    const list = $("#audit");
    list.replaceChildren();
    $("#audit-empty").hidden = entries.length > 0;
    for (const e of entries) {
      const li = document.createElement("li");
      li.dataset.action = e.action;
      const when = document.createElement("time");
      when.dateTime = e.created_at;
      when.textContent = ds.absoluteTime(e.created_at);
      const self = e.actor.email === e.target.email;
      const what = e.action === "delete_account" && self ? `${e.actor.email} deleted their account`
        : `${e.actor.email} ${AUDIT_WORDS[e.action] || e.action} ${e.target.email}`;
      li.append(when, document.createTextNode(` — ${what}`));
      list.append(li);
    }
  }

  /* --------------------------------------------------------------- wiring */

  ds.registerView("account", {
    selector: "#account-view", title: "Account", heading: "#account-title",
    show: () => show(),
    signOut: () => {
      usersState.request += 1;
      $("#users tbody").replaceChildren();
      $("#audit").replaceChildren();
      for (const sel of ["#password-error", "#sessions-error", "#users-error", "#delete-error"]) ds.hideInline(sel);
      $("#password-status").textContent = "";
      $("#current-password").value = "";
      $("#new-password").value = "";
      if ($("#delete-dialog").open) $("#delete-dialog").close();
    },
  });

  document.addEventListener("DOMContentLoaded", () => {
    $("#password-form").addEventListener("submit", onChangePassword);
    $("#sign-out-all").addEventListener("click", onSignOutAll);
    $("#delete-open").addEventListener("click", openDelete);
    $("#delete-cancel").addEventListener("click", closeDelete);
    $("#delete-form").addEventListener("submit", onDelete);
    // Escape closes the dialog too: the focus goes back to the button that opened it
    $("#delete-dialog").addEventListener("close", () => { if (ds.user()) $("#delete-open").focus(); });
    $("#users-filter").addEventListener("input", filterUsers);
    $("#users-refresh").addEventListener("click", loadUsers);
    $("#user-dialog").addEventListener("close", onUserDialogClose);
  });
})();
