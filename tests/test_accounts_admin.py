"""One's own account (password, sign out everywhere, deletion) and administering accounts (disable,
roles, the audit log), over HTTP with WebTest and in the repositories on MariaDB and SQLite."""
from __future__ import annotations

import json
import logging

import pytest
from webtest import TestApp

from conftest import PASSWORD, login
from core.db import AuditEntry, Prediction, PredictionImage, make_engine, make_session_factory, unit_of_work
from core.repositories import predictions as predictions_repo
from core.repositories import users as repo

NEW_PASSWORD = "seven-ate-nine-42!"


def browser(app) -> TestApp:
    """Another browser (its own cookie jar) on the same application."""
    return TestApp(app.app)


def error(res) -> tuple[int, str]:
    return res.status_int, res.json["error"]["code"]


# -- one's own account ---------------------------------------------------------------------------


def test_change_password_needs_the_current_one_and_the_rules(app, make_user):
    email = make_user()
    me = login(app, email)
    other = login(browser(app), email)   # a second session of the same account
    put = lambda body, **kw: app.put_json("/api/v1/account/password", body, headers=me.headers,  # noqa: E731
                                          expect_errors=True, **kw)

    assert error(put({"current_password": "not-my-password-1", "new_password": NEW_PASSWORD})) == (403, "wrong_password")
    assert error(put({"current_password": PASSWORD, "new_password": "short"})) == (400, "weak_password")
    local = email.split("@")[0]
    assert error(put({"current_password": PASSWORD, "new_password": f"{local}-1234"})) == (400, "weak_password")
    assert error(put({"new_password": NEW_PASSWORD})) == (400, "password_required")
    assert error(put([1, 2])) [0] == 400
    # the CSRF token is required like on every unsafe call
    assert app.put_json("/api/v1/account/password", {"current_password": PASSWORD, "new_password": NEW_PASSWORD},
                        expect_errors=True).status_int == 403

    res = put({"current_password": PASSWORD, "new_password": NEW_PASSWORD})
    assert res.status_int == 200 and res.json["user"]["email"] == email
    assert "ds_session=" in res.headers["Set-Cookie"]
    # this browser carries on with its new session and token; the other session has ended
    assert app.get("/api/v1/sessions").json["csrf_token"] == res.json["csrf_token"]
    assert error(other.app.get("/api/v1/sessions", expect_errors=True)) == (401, "session_expired")
    # the old password no longer works, the new one does
    assert app.post_json("/api/v1/sessions", {"email": email, "password": PASSWORD},
                         expect_errors=True).status_int == 401
    login(browser(app), email, NEW_PASSWORD)


def test_sign_out_everywhere_ends_every_session_but_not_keys(app, make_user, signed):
    email = make_user()
    me = login(app, email)
    key = me.create_key()
    others = [login(browser(app), email) for _ in range(2)]
    assert app.delete("/api/v1/sessions?all=maybe", headers=me.headers, expect_errors=True).status_int == 400
    assert app.delete("/api/v1/sessions?all=1", headers=me.headers).status_int == 204
    assert app.get("/api/v1/sessions", expect_errors=True).status_int == 401   # this browser's cookie is cleared
    for session in others:
        assert error(session.app.get("/api/v1/sessions", expect_errors=True)) == (401, "session_expired")
    assert signed(key, "GET", "/api/v1/predictions").status_int == 200   # API keys are not sessions
    login(app, email)   # signing in again works


def test_plain_sign_out_ends_only_this_session(app, make_user):
    email = make_user()
    me, other = login(app, email), login(browser(app), email)
    assert app.delete("/api/v1/sessions", headers=me.headers).status_int == 204
    assert other.app.get("/api/v1/sessions").status_int == 200


def test_delete_account_removes_keys_predictions_and_images(app, make_user, services, registered_mlp,
                                                            digit_pngs, signed):
    email = make_user()
    me = login(app, email)
    key = me.create_key()
    ids = [app.post("/api/v1/predictions", upload_files=[("image", "d.png", digit_pngs[d])],
                    headers=me.headers).json["id"] for d in (3, 4)]
    keeper = login(browser(app), make_user())
    kept = keeper.app.post("/api/v1/predictions", upload_files=[("image", "d.png", digit_pngs[5])],
                           headers=keeper.headers).json["id"]

    assert error(app.delete_json("/api/v1/account", {"password": "wrong-password-1"}, headers=me.headers,
                                 expect_errors=True)) == (403, "wrong_password")
    assert error(app.delete_json("/api/v1/account", {}, headers=me.headers, expect_errors=True)) == (
        400, "password_required")
    res = app.delete_json("/api/v1/account", {"password": PASSWORD}, headers=me.headers)
    assert res.json == {"deleted_predictions": 2}

    with unit_of_work(services.sessions) as session:
        assert repo.user_by_email(session, email) is None
        assert repo.key_by_key_id(session, key[0]) is None
        assert [predictions_repo.get(session, pid) for pid in ids] == [None, None]
        assert predictions_repo.images_of(session, ids) == {ids[0]: [], ids[1]: []}
        assert predictions_repo.get(session, kept) is not None   # someone else's stay
    assert app.get("/api/v1/sessions", expect_errors=True).status_int == 401
    assert signed(key, "GET", "/api/v1/predictions").status_int == 401
    assert app.post_json("/api/v1/sessions", {"email": email, "password": PASSWORD},
                         expect_errors=True).status_int == 401


def test_the_only_admin_cannot_delete_their_account(app, make_user):
    admin = login(app, make_user(role="admin"))
    assert error(app.delete_json("/api/v1/account", {"password": PASSWORD}, headers=admin.headers,
                                 expect_errors=True)) == (409, "last_admin")


# -- administering accounts -----------------------------------------------------------------------


def test_admin_disables_a_user_who_is_locked_out_at_once(app, make_user, signed, caplog):
    admin_email = make_user(role="admin")
    admin = login(browser(app), admin_email)   # `signed` below resets `app`'s cookies
    email = make_user()
    user = login(browser(app), email)
    key = user.create_key()
    user_id = user.user_id

    listed = {u["email"]: u for u in admin.app.get("/api/v1/users").json["users"]}
    assert listed[email]["disabled"] is False and listed[email]["role"] == "user"
    assert listed[admin_email]["role"] == "admin"

    with caplog.at_level(logging.INFO, logger="digitserve.accounts"):
        res = admin.app.patch_json(f"/api/v1/users/{user_id}", {"disabled": True}, headers=admin.headers)
    assert res.json["disabled"] is True and res.json["disabled_at"]
    record = next(r for r in caplog.records if getattr(r, "audit", None))
    assert record.audit["action"] == "disable" and record.audit["actor"] == admin.user_id
    assert record.audit["target"] == user_id

    # the open session, the key and a new sign-in are all refused, with a sentence
    assert error(user.app.get("/api/v1/sessions", expect_errors=True)) == (403, "account_disabled")
    refused = signed(key, "GET", "/api/v1/predictions")
    assert error(refused) == (403, "account_disabled")
    assert "disabled" in refused.json["error"]["message"]
    assert error(browser(app).post_json("/api/v1/sessions", {"email": email, "password": PASSWORD},
                                        expect_errors=True)) == (403, "account_disabled")
    # a wrong password does not learn that the account is disabled
    assert error(browser(app).post_json("/api/v1/sessions", {"email": email, "password": "wrong-password-1"},
                                        expect_errors=True)) == (401, "invalid_credentials")

    admin.app.patch_json(f"/api/v1/users/{user_id}", {"disabled": False}, headers=admin.headers)
    assert signed(key, "GET", "/api/v1/predictions").status_int == 200
    login(browser(app), email)
    # the session open when the account was disabled stays ended
    assert user.app.get("/api/v1/sessions", expect_errors=True).status_int == 401

    entries = admin.app.get("/api/v1/audit").json["entries"]
    assert [(e["action"], e["actor"]["email"], e["target"]["email"]) for e in entries[:2]] == [
        ("enable", admin_email, email), ("disable", admin_email, email)]


def test_grant_and_revoke_admin_and_self_protection(app, make_user):
    admin = login(app, make_user(role="admin"))
    email = make_user()
    other = login(browser(app), email)
    assert error(other.app.get("/api/v1/users", expect_errors=True)) == (403, "forbidden")

    res = app.patch_json(f"/api/v1/users/{other.user_id}", {"role": "admin"}, headers=admin.headers)
    assert res.json["role"] == "admin"
    assert other.app.get("/api/v1/users").status_int == 200   # takes effect on the open session
    other.app.patch_json(f"/api/v1/users/{admin.user_id}", {"role": "user"}, headers=other.headers)
    assert error(app.get("/api/v1/users", expect_errors=True)) == (403, "forbidden")

    # an administrator cannot lock themselves out
    mine = other.app.patch_json(f"/api/v1/users/{other.user_id}", {"disabled": True}, headers=other.headers,
                                expect_errors=True)
    assert error(mine) == (409, "own_account") and "your own account" in mine.json["error"]["message"]
    mine = other.app.patch_json(f"/api/v1/users/{other.user_id}", {"role": "user"}, headers=other.headers,
                                expect_errors=True)
    assert error(mine) == (409, "own_account") and "administrator role" in mine.json["error"]["message"]
    # no change is no audit entry; bad input is a sentence
    other.app.patch_json(f"/api/v1/users/{other.user_id}", {"role": "admin", "disabled": False},
                         headers=other.headers)
    for body in ({}, {"disabled": "yes"}, {"role": "root"}, {"email": "x@example.com"}, [1]):
        assert other.app.patch_json(f"/api/v1/users/{other.user_id}", body, headers=other.headers,
                                    expect_errors=True).status_int == 400, body
    assert error(other.app.patch_json("/api/v1/users/999999", {"disabled": True}, headers=other.headers,
                                      expect_errors=True)) == (404, "not_found")
    assert error(other.app.patch_json("/api/v1/users/abc", {"disabled": True}, headers=other.headers,
                                      expect_errors=True)) == (404, "not_found")
    actions = [e["action"] for e in other.app.get("/api/v1/audit?limit=10").json["entries"]]
    assert actions == ["revoke_admin", "grant_admin"]
    assert other.app.get("/api/v1/audit?limit=0", expect_errors=True).status_int == 400


def test_admin_key_can_administer(app, make_user, signed):
    admin = login(browser(app), make_user(role="admin"))
    key = admin.create_key(scopes=("predict", "admin"))
    plain = admin.create_key()
    target = login(browser(app), make_user())
    body = json.dumps({"disabled": True}).encode()
    res = signed(key, "PATCH", f"/api/v1/users/{target.user_id}", body, "application/json")
    assert res.status_int == 200 and res.json["disabled"] is True
    assert signed(plain, "GET", "/api/v1/users").status_int == 403


# -- repositories on both databases ---------------------------------------------------------------


@pytest.fixture
def sessions(database_url):
    engine = make_engine(database_url)
    yield make_session_factory(engine)
    engine.dispose()


def test_delete_user_and_audit_rows_outlive_the_user(sessions, tmp_path):
    from models.registry import ModelRegistry
    from models.store import ModelStore

    model = tmp_path / "m.keras"
    model.write_bytes(b"not really a model")
    version = ModelRegistry(sessions, ModelStore(sessions, tmp_path / "cache")).register("m", "mlp", model)
    with unit_of_work(sessions) as session:
        admin = repo.add_user(session, "admin@example.com", "x", "admin")
        user = repo.add_user(session, "user@example.com", "x", "user")
        repo.add_key(session, "dsk_1", user.id, "k", ["predict"], "secret")
        for n, (digit, label) in enumerate([(3, 3), (3, 8), (1, None)]):
            predictions_repo.add(session, [(Prediction(
                id=f"p{n}", user_id=user.id, model_version_id=version.id, model_name="m", model_version=1,
                n_images=1, status="succeeded"), [("sha", b"png", 1.0)])])
            session.flush()
            image = predictions_repo.image(session, f"p{n}", 0)
            image.digit, image.feedback_label = digit, label
        repo.add_audit(session, admin, user, "disable")
        assert repo.count_admins(session) == 1 and repo.prediction_counts(session) == {user.id: 3}
        assert repo.end_sessions(session, user.id) == 1
        admin_id, user_id = admin.id, user.id

    with unit_of_work(sessions) as session:
        assert predictions_repo.feedback_agreement(session) == {version.id: (2, 1)}
        assert predictions_repo.feedback_agreement(session, [version.id + 1]) == {}
        assert repo.delete_user(session, user_id) == 3
    with unit_of_work(sessions) as session:
        assert repo.user_by_id(session, user_id) is None
        assert repo.key_by_key_id(session, "dsk_1") is None
        assert session.query(PredictionImage).count() == 0 and session.query(Prediction).count() == 0
        [entry] = repo.audit_entries(session)
        assert (entry.actor_id, entry.target_id, entry.target_email) == (admin_id, None, "user@example.com")
        assert session.query(AuditEntry).count() == 1
