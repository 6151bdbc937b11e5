"""The models dashboard, compare mode and the account page, end to end: Debian's headless Chromium
against the live server and worker (see test_page.py for the set-up and the helpers)."""
from __future__ import annotations

import re

import numpy as np
import pytest
from playwright.sync_api import expect

from conftest import png_bytes, training_record
from server.services.accounts import create_user
from test_page import (PASSWORD, PREDICT_TIMEOUT_MS, api_predict, browser_page, chromium, draw_one,  # noqa: F401
                       new_email, open_page, register, screenshots, wait_ready)

pytestmark = pytest.mark.slow
NEW_PASSWORD = "nine-lives-of-seven-42"


def sign_in(page, base_url: str, email: str, password: str = PASSWORD) -> None:
    open_page(page, base_url)
    page.fill("#login-email", email)
    page.fill("#login-password", password)
    page.click("#login-submit")
    expect(page.locator("#user-email")).to_have_text(email)


def new_admin(live_server) -> str:
    email = new_email()
    create_user(live_server.services, email, PASSWORD, role="admin")
    return email


@pytest.fixture
def other_page(chromium):
    """A second browser (its own cookies), for a second person."""
    context = chromium.new_context(viewport={"width": 1100, "height": 900})
    context.set_default_timeout(10_000)
    page = context.new_page()
    yield page
    context.close()


def predict_drawing(page) -> str:
    """Draw a 1, predict, and return the "name:version" the answer came from (as the page shows it)."""
    page.click("[data-testid=tab-draw]")
    page.click("#clear")
    draw_one(page)
    with page.expect_response(lambda r: r.request.method == "POST" and "/api/v1/predictions" in r.url,
                              timeout=PREDICT_TIMEOUT_MS) as response:
        page.click("#predict")
    answer = response.value.json()
    shown = f"{answer['model']['name']}:{answer['model']['version']}"
    # the page shows this prediction's answer (not the one before it) and where it came from
    expect(page.locator(".results-meta")).to_contain_text(shown, timeout=PREDICT_TIMEOUT_MS)
    expect(page.locator("#status")).to_contain_text(f"with {shown}", timeout=PREDICT_TIMEOUT_MS)
    expect(page.locator("#status")).to_have_attribute("data-state", "done")
    return shown


def test_dashboard_shows_versions_and_charts_and_admin_activates_one(live_server, browser_page, tiny_mlp_file,
                                                                    tmp_path):
    page = browser_page
    registry = live_server.services.registry
    first = registry.get("mlp")
    second = registry.register("mlp", "mlp", tiny_mlp_file, **training_record(tiny_mlp_file))
    sign_in(page, live_server.url, new_admin(live_server))
    wait_ready(page)
    assert predict_drawing(page) == f"mlp:{first.version}"

    page.click("[data-testid=tab-models]")
    expect(page).to_have_url(re.compile(r"#models$"))
    expect(page.locator("#models-title")).to_be_focused()
    card = page.locator("[data-testid=model-card][data-model='mlp']")
    row_new = card.locator(f"tr[data-version='{second.version}']")
    row_old = card.locator(f"tr[data-version='{first.version}']")
    expect(row_new.locator("[data-testid=version-state]")).to_have_text("inactive")
    expect(row_old.locator("[data-testid=version-state]")).to_have_text("active")
    expect(row_new).to_contain_text("784")            # the architecture from the training record
    expect(row_new).to_contain_text(re.compile(r"\d\d\.\d\d %"))

    # The active version's record, drawn as SVG charts with a text alternative.
    detail = page.locator("#version-detail")
    expect(detail).to_have_attribute("data-version", str(first.version))
    epochs = len(training_record(tiny_mlp_file)["curves"]["loss"])
    for chart in ("chart-loss", "chart-accuracy", "chart-confusion", "chart-per-class"):
        svg = detail.locator(f"[data-testid={chart}] svg[role=img]")
        expect(svg).to_be_visible()
        assert svg.get_attribute("aria-labelledby"), chart
    expect(detail.locator("[data-testid=chart-loss] circle")).to_have_count(2 * epochs)   # training and validation
    expect(detail.locator("[data-testid=chart-confusion] rect")).to_have_count(100)
    expect(detail.locator("[data-testid=chart-per-class] rect")).to_have_count(20)
    tooltip = detail.locator("[data-testid=chart-confusion] rect title").first.text_content()
    assert re.fullmatch(r"true 0, answered 0: \d+ \(\d+\.\d % of the 0s\)", tooltip), tooltip
    table = detail.locator("[data-testid=chart-confusion] details")
    table.locator("summary").click()
    expect(table.locator("tbody tr")).to_have_count(10)
    expect(detail.locator("[data-panel=feedback]")).to_contain_text("labelled")
    screenshots(page, "models", tmp_path)
    page.emulate_media(color_scheme="dark")
    screenshots(page, "models-dark", tmp_path)
    page.emulate_media(color_scheme="light")

    # Activate the new version: the dialog's Cancel changes nothing; confirming switches.
    row_new.locator("[data-testid=version-activate]").click()
    dialog = page.locator("#activate-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(f"mlp:{second.version}")
    page.click("#activate-cancel")
    expect(dialog).to_be_hidden()
    expect(row_new.locator("[data-testid=version-state]")).to_have_text("inactive")
    row_new.locator("[data-testid=version-activate]").click()
    page.click("#activate-confirm")
    expect(row_new.locator("[data-testid=version-state]")).to_have_text("active")
    expect(row_old.locator("[data-testid=version-state]")).to_have_text("inactive")
    expect(page.locator("#models-status")).to_contain_text(f"mlp:{second.version} is now active")
    assert registry.get("mlp").version == second.version

    # The next answer comes from it, and the API says so too.
    assert predict_drawing(page) == f"mlp:{second.version}"
    latest = page.evaluate("async () => (await (await fetch('/api/v1/predictions?limit=1')).json()).predictions[0]")
    assert latest["model"] == {"name": "mlp", "version": second.version} and latest["status"] == "succeeded"

    # Roll back from the dashboard.
    page.click("[data-testid=tab-models]")
    row_old.locator("[data-testid=version-activate]").click()
    expect(page.locator("#activate-confirm")).to_have_text(f"Roll back to v{first.version}")
    page.click("#activate-confirm")
    expect(row_old.locator("[data-testid=version-state]")).to_have_text("active")
    assert predict_drawing(page) == f"mlp:{first.version}"


def test_dashboard_without_admin_has_no_activate_buttons(live_server, browser_page):
    page = browser_page
    register(page, live_server.url)
    wait_ready(page)
    page.click("[data-testid=tab-models]")
    expect(page.locator("[data-testid=model-card][data-model='mlp']")).to_be_visible()
    expect(page.locator("[data-testid=version-details]").first).to_be_visible()
    expect(page.locator("[data-testid=version-activate]")).to_have_count(0)
    expect(page.locator("#users-card")).to_be_hidden()


def test_compare_mode_asks_every_active_network(live_server, browser_page, tiny_mlp_file, tmp_path):
    page = browser_page
    registry = live_server.services.registry
    if "mlp_b" not in registry.active_versions():
        registry.register("mlp_b", "mlp", tiny_mlp_file, activate=True, **training_record(tiny_mlp_file))
    active = registry.active_versions()
    assert len(active) >= 2
    register(page, live_server.url)
    wait_ready(page)

    # Nothing drawn: refused in the page, next to the buttons.
    page.click("#compare")
    expect(page.locator("#predict-error")).to_contain_text("Draw a digit")

    draw_one(page)
    page.click("#compare")
    columns = page.locator("[data-testid=compare-column]")
    expect(columns).to_have_count(len(active))
    expect(page.locator("#status")).to_have_attribute("data-state", "done", timeout=PREDICT_TIMEOUT_MS)
    expect(page.locator("#results-title")).to_have_text("Compare")
    for name, info in active.items():
        column = page.locator(f"[data-testid=compare-column][data-model='{name}']")
        expect(column.locator("[data-testid=compare-digit]")).to_have_text("1")
        expect(column.locator(".compare-model")).to_have_text(f"{name}:{info.version}")
        expect(column.locator(".probability-bar")).to_have_count(10)
    expect(page.locator("#status")).to_contain_text("they agree")
    screenshots(page, "compare", tmp_path)

    # A plain Predict afterwards shows one result again.
    page.click("#predict")
    expect(page.locator(".result")).to_have_count(1, timeout=PREDICT_TIMEOUT_MS)
    expect(columns).to_have_count(0)
    expect(page.locator("#results-title")).to_have_text("Result")


def test_change_password_then_sign_in_with_the_new_one(live_server, browser_page, tmp_path):
    page = browser_page
    email = register(page, live_server.url)
    page.click("[data-testid=tab-account]")
    expect(page.locator("#account-title")).to_be_focused()
    expect(page.locator("#account-email")).to_have_text(email)
    expect(page.locator("#users-card")).to_be_hidden()
    screenshots(page, "account", tmp_path)

    page.fill("#current-password", "not-the-password-1")
    page.fill("#new-password", NEW_PASSWORD)
    page.click("#password-submit")
    expect(page.locator("#password-error")).to_have_text("Your current password is not right.")
    page.fill("#current-password", PASSWORD)
    page.fill("#new-password", "aaaaaaaaaaaa")
    page.press("#new-password", "Enter")
    expect(page.locator("#password-error")).to_contain_text("too easy to guess")
    page.fill("#new-password", NEW_PASSWORD)
    page.click("#password-submit")
    expect(page.locator("#password-status")).to_contain_text("Password changed")
    expect(page.locator("#password-error")).to_be_hidden()
    # this browser stays signed in: its next unsafe call carries the new CSRF token
    page.click("[data-testid=tab-keys]")
    page.fill("#key-name", "after the change")
    page.click("#key-create")
    expect(page.locator("#key-secret")).to_be_visible()

    page.click("#logout")
    page.fill("#login-email", email)
    page.fill("#login-password", PASSWORD)
    page.click("#login-submit")
    expect(page.locator("#auth-error")).to_have_text("Wrong email or password.")
    page.fill("#login-password", NEW_PASSWORD)
    page.click("#login-submit")
    expect(page.locator("#user-email")).to_have_text(email)
    expect(page.locator("#auth-error")).to_be_hidden()


def test_sign_out_everywhere(live_server, browser_page, other_page):
    page = browser_page
    email = register(page, live_server.url)
    sign_in(other_page, live_server.url, email)
    page.click("[data-testid=tab-account]")
    page.click("#sign-out-all")
    expect(page.locator("#login-form")).to_be_visible()
    expect(page.locator("#auth-status")).to_contain_text("every session")
    other_page.click("[data-testid=tab-history]")
    expect(other_page.locator("#auth-error")).to_contain_text("session has expired")


def test_delete_account_and_its_predictions(live_server, browser_page, mnist):
    from core.db import unit_of_work
    from core.repositories import predictions as predictions_repo
    from core.repositories import users as users_repo

    page = browser_page
    email = register(page, live_server.url)
    wait_ready(page)
    ids = api_predict(page, png_bytes(np.kron(mnist.x_test[1], np.ones((4, 4), np.uint8))), 2)
    with unit_of_work(live_server.services.sessions) as session:
        assert all(predictions_repo.get(session, pid) is not None for pid in ids)

    page.click("[data-testid=tab-account]")
    page.click("#delete-open")
    dialog = page.locator("#delete-dialog")
    expect(dialog).to_be_visible()
    expect(page.locator("#delete-password")).to_be_focused()
    page.click("#delete-cancel")
    expect(dialog).to_be_hidden()
    expect(page.locator("#delete-open")).to_be_focused()

    page.click("#delete-open")
    page.click("#delete-confirm")
    expect(page.locator("#delete-error")).to_have_text("Type your password to confirm.")
    page.fill("#delete-password", "not-the-password-1")
    page.click("#delete-confirm")
    expect(page.locator("#delete-error")).to_have_text("Your current password is not right.")
    page.fill("#delete-password", PASSWORD)
    page.press("#delete-password", "Enter")
    expect(page.locator("#login-form")).to_be_visible()
    expect(page.locator("#auth-status")).to_contain_text("deleted, with 2 predictions")

    with unit_of_work(live_server.services.sessions) as session:
        assert users_repo.user_by_email(session, email) is None
        assert [predictions_repo.get(session, pid) for pid in ids] == [None, None]
        assert predictions_repo.images_of(session, ids) == {pid: [] for pid in ids}
    page.fill("#login-email", email)
    page.fill("#login-password", PASSWORD)
    page.click("#login-submit")
    expect(page.locator("#auth-error")).to_have_text("Wrong email or password.")


def test_admin_disables_a_user_who_then_cannot_sign_in(live_server, browser_page, other_page, tmp_path):
    page = browser_page
    admin = new_admin(live_server)
    email = new_email()
    create_user(live_server.services, email, PASSWORD)
    sign_in(other_page, live_server.url, email)

    sign_in(page, live_server.url, admin)
    page.click("[data-testid=tab-account]")
    users = page.locator("#users-card")
    expect(users).to_be_visible()
    mine = page.locator(f"[data-testid=user-row][data-email='{admin}']")
    expect(mine).to_contain_text("(you)")
    expect(mine.locator("button")).to_have_count(0)   # no way to lock oneself out
    row = page.locator(f"[data-testid=user-row][data-email='{email}']")
    expect(row.locator("[data-testid=user-state]")).to_have_text("active")
    page.fill("#users-filter", email.split("@")[0])
    expect(page.locator("[data-testid=user-row]:visible")).to_have_count(1)
    expect(row).to_be_visible()

    row.locator("[data-testid=user-disable]").click()
    dialog = page.locator("#user-dialog")
    expect(dialog).to_contain_text(email)
    page.click("#user-cancel")
    expect(row.locator("[data-testid=user-state]")).to_have_text("active")
    row.locator("[data-testid=user-disable]").click()
    page.click("#user-confirm")
    expect(row.locator("[data-testid=user-state]")).to_have_text("disabled")
    expect(page.locator("#audit li").first).to_have_text(re.compile(rf"{re.escape(admin)} disabled {re.escape(email)}$"))
    row.locator("[data-testid=user-grant-admin]").click()
    page.click("#user-confirm")
    expect(row.locator("[data-testid=user-role]")).to_have_text("admin")
    screenshots(page, "account-admin", tmp_path)
    page.emulate_media(color_scheme="dark")
    screenshots(page, "account-admin-dark", tmp_path)
    page.emulate_media(color_scheme="light")

    # The open session of the disabled user stops at its next request; signing in is refused.
    other_page.click("[data-testid=tab-history]")
    expect(other_page.locator("#auth-error")).to_contain_text("disabled")
    expect(other_page.locator("#login-form")).to_be_visible()
    other_page.fill("#login-email", email)
    other_page.fill("#login-password", PASSWORD)
    other_page.click("#login-submit")
    expect(other_page.locator("#auth-error")).to_have_text(
        "This account is disabled. Ask an administrator to re-enable it.")

    # Re-enabled, the user signs in again.
    row.locator("[data-testid=user-enable]").click()
    page.click("#user-confirm")
    expect(row.locator("[data-testid=user-state]")).to_have_text("active")
    other_page.click("#login-submit")
    expect(other_page.locator("#user-email")).to_have_text(email)
