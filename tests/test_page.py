"""The browser page end to end: Debian's headless Chromium against a live server and worker.

Needs the ``live_server`` fixture (conftest): ``.url`` of a running web app plus
worker with an MNIST-trained MLP active as ``mlp``, and the ``mnist`` fixture
for a real test-set digit to upload.
"""
from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pytest

from PIL import Image
from playwright.sync_api import expect, sync_playwright

from conftest import ROOT, process_env

CHROMIUM = os.environ.get("CHROMIUM_PATH", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
PASSWORD = "correct-horse-battery-staple-42"
# A prediction includes the upload, the queue and the worker; the first one may
# also load the network.
PREDICT_TIMEOUT_MS = 30_000
DESKTOP = {"width": 1280, "height": 900}
PHONE = {"width": 390, "height": 844}
SHOTS = Path(os.environ.get("WEBSHOTS_DIR", "/tmp/webshots"))

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def chromium():
    """One headless Chromium for the module (about a second to start); each test gets its own context."""
    playwright = sync_playwright().start()
    try:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
    except BaseException:
        playwright.stop()
        raise
    yield browser
    browser.close()
    playwright.stop()


@pytest.fixture
def browser_page(chromium):
    """A fresh context (no cookies) and page; uncaught page errors fail the test."""
    context = chromium.new_context(viewport={"width": 1100, "height": 900}, device_scale_factor=2)
    context.set_default_timeout(10_000)
    page = context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    yield page
    context.close()
    assert not errors, f"JavaScript errors on the page: {errors}"


# --------------------------------------------------------------------------- helpers


def new_email() -> str:
    return f"page-{uuid.uuid4().hex[:12]}@example.com"


def open_page(page, base_url: str) -> None:
    page.goto(base_url.rstrip("/") + "/")
    # Either view appears once GET /api/v1/sessions has answered.
    expect(page.locator("#booting")).to_be_hidden()


def register(page, base_url: str) -> str:
    """Create an account through the form; the page signs in right after."""
    email = new_email()
    open_page(page, base_url)
    expect(page.locator("#login-email")).to_be_visible()
    page.fill("#login-email", email)
    page.fill("#login-password", PASSWORD)
    page.click("#register-submit")
    expect(page.locator("#canvas")).to_be_visible()
    expect(page.locator("#logout")).to_be_visible()
    expect(page.locator("#user-email")).to_have_text(email)
    expect(page.locator("#auth-error")).to_be_hidden()
    return email


def wait_ready(page) -> None:
    """Models listed (the active `mlp` preselected) and the empty history loaded."""
    expect(page.locator("#model-select")).to_have_value("mlp")
    expect(page.locator("#recent-empty")).to_be_visible()


def draw_one(page) -> None:
    """A vertical stroke through the middle of the canvas: a "1"."""
    box = page.locator("#canvas").bounding_box()
    assert box and box["width"] >= 200, box
    x = box["x"] + box["width"] * 0.5
    page.mouse.move(x, box["y"] + box["height"] * 0.15)
    page.mouse.down()
    page.mouse.move(x, box["y"] + box["height"] * 0.85, steps=20)
    page.mouse.up()


def mnist_png(image: np.ndarray, path: Path, *, invert: bool = False, scale: int = 4) -> Path:
    """Write a 28x28 uint8 MNIST digit as an upscaled PNG (white on black, or dark on light)."""
    data = 255 - image if invert else image
    im = Image.fromarray(np.asarray(data, dtype=np.uint8), mode="L")
    im = im.resize((28 * scale, 28 * scale), Image.Resampling.BILINEAR)
    buf = io.BytesIO()
    im.save(buf, format="PNG")
    path.write_bytes(buf.getvalue())
    return path


def screenshots(page, name: str, tmp_path: Path) -> list[Path]:
    """Full-page shots of the current section at desktop and phone width, kept for a reviewer in SHOTS.

    At phone width nothing may stick out sideways (no horizontal scrolling)."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    saved = []
    for label, size in (("desktop", DESKTOP), ("phone", PHONE)):
        page.set_viewport_size(size)
        page.wait_for_timeout(150)   # layout and the canvas resize settle
        overflow = page.evaluate("() => document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{name} at {label} width scrolls sideways by {overflow}px"
        path = tmp_path / f"{name}-{label}.png"
        page.screenshot(path=str(path), full_page=True)
        shutil.copy(path, SHOTS / path.name)
        saved.append(path)
    page.set_viewport_size(DESKTOP)
    return saved


def cli_predict(live_server, image: Path, key_id: str, secret: str) -> subprocess.CompletedProcess:
    """The real `digitserve predict` command, signed with the key."""
    env = process_env(live_server.settings, DIGITSERVE_URL=live_server.url, DIGITSERVE_KEY_ID=key_id,
                      DIGITSERVE_SECRET=secret, PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, "-m", "server.cli", "predict", str(image), "--wait", "10"],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)


def api_predict(page, png: bytes, n: int = 1) -> list[str]:
    """Send `n` predictions from the page's session (JSON + CSRF header), as a shortcut to fill the history."""
    return page.evaluate(
        """async ([b64, n]) => {
             const s = await (await fetch('/api/v1/sessions')).json();
             const ids = [];
             for (let i = 0; i < n; i++) {
               const r = await fetch('/api/v1/predictions?wait=10', {method: 'POST',
                 headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token},
                 body: JSON.stringify({images: [b64]})});
               ids.push((await r.json()).id);
             }
             return ids;
           }""",
        [base64.b64encode(png).decode(), n],
    )


def preprocessed_widths(page) -> list[int]:
    return page.eval_on_selector_all(
        ".result img.preprocessed", "imgs => imgs.map(i => (i.complete ? i.naturalWidth : -1))"
    )


# --------------------------------------------------------------------------- tests


def test_register_draw_predict(live_server, browser_page, tmp_path):
    page = browser_page
    register(page, live_server.url)
    wait_ready(page)
    expect(page.locator("#model-select option[value='mlp']")).to_have_text(re.compile(r"^mlp \(active v\d+\)$"))

    # The canvas backing store follows devicePixelRatio (2 here), the CSS size stays 280.
    size = page.eval_on_selector("#canvas", "c => [c.width, c.height, c.clientWidth]")
    assert size[0] == size[1] == 560 and 270 <= size[2] <= 284, size

    draw_one(page)
    page.click("#predict")

    digit = page.locator(".result .result-digit")
    expect(digit).to_have_text("1", timeout=PREDICT_TIMEOUT_MS)
    expect(page.locator("#status")).to_have_attribute("data-state", "done")
    expect(page.locator("#status")).to_contain_text("Done")
    expect(page.locator(".result")).to_have_count(1)
    expect(page.locator(".result .probability-bar")).to_have_count(10)
    confidence = page.locator(".result .result-confidence").inner_text()
    assert re.fullmatch(r"(\d{1,2}\.\d|100)\u00a0%", confidence), confidence
    # The tallest bar is the predicted digit, and the probabilities sum to ~1.
    values = page.eval_on_selector_all(".result .probability-bar", "bars => bars.map(b => Number(b.dataset.value))")
    assert len(values) == 10 and abs(sum(values) - 1) < 1e-2 and int(np.argmax(values)) == 1, values
    expect(page.locator(".result .probability-bar.is-top")).to_have_attribute("data-digit", "1")

    # The 28x28 image the network saw.
    page.wait_for_function(
        "() => { const i = document.querySelector('.result img.preprocessed');"
        " return !!i && i.complete && i.naturalWidth > 0; }"
    )
    assert preprocessed_widths(page) == [28]
    expect(page.locator(".result img.preprocessed")).to_be_visible()

    # The history gained the prediction.
    expect(page.locator("#recent li")).to_have_count(1)
    expect(page.locator("#recent li").first).to_contain_text("1")
    expect(page.locator("#recent li").first).to_contain_text("mlp:")
    expect(page.locator("#recent-empty")).to_be_hidden()

    # Feedback goes through (a JSON POST with the CSRF token).
    page.click(".result .feedback-toggle")
    page.click(".result .feedback-digit[data-digit='1']")
    expect(page.locator(".result .feedback-status")).to_contain_text("Thanks")
    expect(page.locator(".result .feedback-digit[data-digit='1']")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("#predict-error")).to_be_hidden()

    for shot in screenshots(page, "predict", tmp_path):
        assert shot.stat().st_size > 10_000

    # Clear empties the canvas; predicting nothing is refused in the page, next to the button,
    # and the earlier answer and its "Done" go away.
    page.click("#clear")
    page.click("#predict")
    expect(page.locator("#predict-error")).to_be_visible()
    expect(page.locator("#predict-error")).to_contain_text("Draw a digit")
    expect(page.locator(".result")).to_have_count(0)
    expect(page.locator("#results-empty")).to_be_visible()
    expect(page.locator("#status")).to_have_attribute("data-state", "failed")
    expect(page.locator("#status")).not_to_contain_text("Done")


def test_upload_files(live_server, browser_page, mnist, tmp_path):
    page = browser_page
    register(page, live_server.url)
    wait_ready(page)

    # A white-on-black MNIST test digit and a dark-on-light one, in one request.
    first = mnist_png(mnist.x_test[0], tmp_path / "first.png")
    second = mnist_png(mnist.x_test[1], tmp_path / "second.png", invert=True)
    expected = [str(int(mnist.y_test[0])), str(int(mnist.y_test[1]))]

    page.set_input_files("#file-input", [str(first), str(second)])
    expect(page.locator("#file-list li")).to_have_count(2)
    page.click("#predict")

    expect(page.locator(".result")).to_have_count(2, timeout=PREDICT_TIMEOUT_MS)
    expect(page.locator(".result .result-digit")).to_have_text(expected)
    expect(page.locator(".result").nth(0).locator(".probability-bar")).to_have_count(10)
    expect(page.locator(".result").nth(1).locator(".probability-bar")).to_have_count(10)
    page.wait_for_function(
        "() => { const imgs = [...document.querySelectorAll('.result img.preprocessed')];"
        " return imgs.length === 2 && imgs.every(i => i.complete && i.naturalWidth > 0); }"
    )
    assert preprocessed_widths(page) == [28, 28]
    expect(page.locator("#recent li")).to_have_count(1)


def test_unsupported_file_after_success_clears_result(live_server, browser_page, mnist, tmp_path):
    """A file named .png that is not a picture passes the page's filter; the server's 415 becomes a
    sentence naming the file, next to Predict, and the earlier answer is cleared."""
    page = browser_page
    register(page, live_server.url)
    wait_ready(page)

    good = mnist_png(mnist.x_test[0], tmp_path / "good.png")
    page.set_input_files("#file-input", str(good))
    page.click("#predict")
    expect(page.locator(".result")).to_have_count(1, timeout=PREDICT_TIMEOUT_MS)
    expect(page.locator("#status")).to_contain_text("Done")

    page.click("#clear-files")
    fake = tmp_path / "notes.png"
    fake.write_text("this is plain text, not a picture\n" * 4)
    page.set_input_files("#file-input", str(fake))
    expect(page.locator("#file-list li")).to_have_count(1)
    expect(page.locator("#files-error")).to_be_hidden()
    page.click("#predict")

    error = page.locator("#predict-error")
    expect(error).to_be_visible(timeout=PREDICT_TIMEOUT_MS)
    expect(error).to_contain_text("notes.png")
    expect(error).to_contain_text(re.compile(r"unsupported", re.I))
    expect(error).to_contain_text("PNG, JPEG")
    expect(page.locator("#status")).to_have_attribute("data-state", "failed")
    expect(page.locator("#status")).not_to_contain_text("Done")
    expect(page.locator(".result")).to_have_count(0)
    expect(page.locator("#predict")).to_be_enabled()


def test_non_image_files_filtered_before_upload(live_server, browser_page, mnist, tmp_path):
    page = browser_page
    register(page, live_server.url)
    wait_ready(page)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.method + " " + r.url) if "/api/v1/predictions" in r.url else None)

    notes = tmp_path / "notes.txt"
    notes.write_text("not a picture")
    sheet = tmp_path / "scores.pdf"
    sheet.write_bytes(b"%PDF-1.4\n")
    digit = mnist_png(mnist.x_test[3], tmp_path / "digit.png")
    page.set_input_files("#file-input", [str(notes), str(digit), str(sheet)])

    expect(page.locator("#file-list li")).to_have_count(1)
    expect(page.locator("#file-list li")).to_contain_text("digit.png")
    skipped = page.locator("#files-error")
    expect(skipped).to_be_visible()
    expect(skipped).to_contain_text("Skipped “notes.txt”")
    expect(skipped).to_contain_text("Skipped “scores.pdf”")
    assert not any(r.startswith("POST") for r in requests), requests
    screenshots(page, "predict-skipped-files", tmp_path)

    # Only non-images alone: nothing is added, the drawing stays the input.
    page.click("#clear-files")
    page.set_input_files("#file-input", str(notes))
    expect(page.locator("#file-list li")).to_have_count(0)
    expect(skipped).to_contain_text("notes.txt")
    expect(page.locator("#file-list-wrap")).to_be_hidden()


def test_honest_confidence_and_doubt(live_server, browser_page, tmp_path):
    """One decimal, never rounded up to 100 %; a doubtful answer names the runner-up.

    The API's answers are replaced (Playwright routes) to have exact probabilities."""
    page = browser_page
    register(page, live_server.url)
    wait_ready(page)
    pid = "f" * 32

    def fake_answer(body: str):
        def handle(route, request):
            if request.method == "POST" or pid in request.url:
                route.fulfill(status=200, content_type="application/json", body=body)
            else:
                route.continue_()
        return handle

    def prediction(probabilities):
        digit = int(np.argmax(probabilities))
        return {"id": pid, "status": "succeeded", "model": {"name": "mlp", "version": 1},
                "created_at": "2026-01-01T00:00:00.000Z", "timings": {},
                "results": [{"index": 0, "digit": digit, "confidence": probabilities[digit],
                             "probabilities": probabilities}]}

    cases = [
        ([0.99996] + [0.00004 / 9] * 9, "0", "99.9\u00a0%", None),
        ([0.0, 0.0, 0.0, 0.55, 0.0, 0.0, 0.0, 0.0, 0.45, 0.0], "3", "55.0\u00a0%", "unsure — maybe 8"),
        ([0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.85, 0.0, 0.15], "7", "85.0\u00a0%", None),
        ([0.0] * 9 + [1.0], "9", "100\u00a0%", None),
        ([0.01] * 9 + [0.91], "9", "91.0\u00a0%", None),
    ]
    for probabilities, digit, shown, doubt in cases:
        page.unroute("**/api/v1/predictions**")
        page.route("**/api/v1/predictions**", fake_answer(json.dumps(prediction(probabilities))))
        draw_one(page)
        page.click("#predict")
        expect(page.locator(".result .result-digit")).to_have_text(digit)
        expect(page.locator(".result .result-confidence")).to_have_text(shown)
        if doubt:
            expect(page.locator(".result .doubt")).to_have_text(doubt)
            expect(page.locator("#status")).to_contain_text(doubt)
            screenshots(page, "predict-unsure", tmp_path)
        else:
            expect(page.locator(".result .doubt")).to_have_count(0)
        page.click("#clear")
    page.unroute("**/api/v1/predictions**")


def test_phone_predict_scrolls_to_result(live_server, browser_page):
    page = browser_page
    page.set_viewport_size(PHONE)
    register(page, live_server.url)
    wait_ready(page)
    expect(page.locator("#predict-error")).to_be_hidden()
    draw_one(page)
    page.click("#predict")
    expect(page.locator(".result .result-digit")).to_be_visible(timeout=PREDICT_TIMEOUT_MS)
    page.wait_for_function("() => { const r = document.querySelector('.results-card').getBoundingClientRect();"
                           " return r.top >= -2 && r.top < window.innerHeight / 2; }")


def test_api_key_lifecycle_with_cli(live_server, browser_page, mnist, tmp_path):
    page = browser_page
    register(page, live_server.url)
    wait_ready(page)
    page.click("[data-testid=tab-keys]")
    expect(page).to_have_url(re.compile(r"#keys$"))
    expect(page.locator("#keys-empty")).to_be_visible()
    expect(page.locator("#scope-admin-row")).to_be_hidden()   # not an admin
    expect(page.locator("#scope-predict")).to_be_checked()

    page.fill("#key-name", "laptop script")
    page.click("#key-create")
    secret_box = page.locator("#key-secret")
    expect(secret_box).to_be_visible()
    key_id = page.locator("#new-key-id").inner_text()
    secret = page.locator("#new-key-secret").inner_text()
    assert re.fullmatch(r"dsk_[0-9a-f]{24}", key_id), key_id
    assert len(secret) >= 32, secret
    cli = page.locator("#snippet-cli").inner_text()
    assert f"export DIGITSERVE_URL={live_server.url}" in cli, cli
    assert f"export DIGITSERVE_KEY_ID={key_id}" in cli, cli
    assert "export DIGITSERVE_SECRET=" in cli and secret in cli, cli
    assert "digitserve predict seven.png --model mlp --wait 5" in cli, cli
    expect(page.locator("#snippet-curl")).to_contain_text("README")
    expect(page.locator("#snippet-curl")).to_contain_text(f"KeyId={key_id},")
    page.click("[data-testid=copy-secret]")
    expect(page.locator("#copy-status")).not_to_be_empty()

    # Listed, active, never used yet.
    item = page.locator(f"#keys li[data-key-id='{key_id}']")
    expect(item).to_contain_text("laptop script")
    expect(item.locator("[data-testid=key-state]")).to_have_text("active")
    expect(item.locator(".key-last-used")).to_have_text("never")
    screenshots(page, "keys", tmp_path)

    # Shown once: gone from the page, and not in the list.
    page.click("#key-secret-done")
    expect(secret_box).to_be_hidden()
    assert secret not in page.content()
    page.reload()
    expect(page.locator(f"#keys li[data-key-id='{key_id}']")).to_be_visible()
    assert secret not in page.content()

    # The real CLI with the key gets a digit.
    image = mnist_png(mnist.x_test[0], tmp_path / "seven.png")
    done = cli_predict(live_server, image, key_id, secret)
    assert done.returncode == 0, done.stderr
    assert re.search(rf"seven\.png: {int(mnist.y_test[0])} \(", done.stdout), done.stdout
    page.click("#keys-refresh")
    expect(item.locator(".key-last-used")).not_to_have_text("never")

    # Revoke: Cancel keeps it, confirming revokes it.
    item.locator("[data-testid=key-revoke]").click()
    dialog = page.locator("#revoke-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text(key_id)
    page.click("#revoke-cancel")
    expect(dialog).to_be_hidden()
    expect(item.locator("[data-testid=key-state]")).to_have_text("active")
    expect(item.locator("[data-testid=key-revoke]")).to_be_focused()
    page.keyboard.press("Enter")   # the keyboard reaches the same dialog
    expect(dialog).to_be_visible()
    page.click("#revoke-confirm")
    expect(item.locator("[data-testid=key-state]")).to_have_text("revoked")
    expect(item.locator("[data-testid=key-revoke]")).to_have_count(0)
    expect(page.locator("#keys-error")).to_be_hidden()

    refused = cli_predict(live_server, image, key_id, secret)
    assert refused.returncode == 1, (refused.stdout, refused.stderr)
    assert "401" in refused.stderr or "unauthorized" in refused.stderr.lower(), refused.stderr


def test_history_correction_and_pages(live_server, browser_page, mnist, tmp_path):
    page = browser_page
    register(page, live_server.url)
    wait_ready(page)

    # Eleven older predictions (so the history has two pages), then one from the page.
    from conftest import png_bytes
    api_predict(page, png_bytes(np.kron(mnist.x_test[1], np.ones((4, 4), np.uint8))), 11)
    image = mnist_png(mnist.x_test[0], tmp_path / "seven.png")
    page.set_input_files("#file-input", str(image))
    page.click("#predict")
    digit = page.locator(".result .result-digit")
    expect(digit).to_be_visible(timeout=PREDICT_TIMEOUT_MS)
    answer = int(digit.inner_text())
    wrong = (answer + 1) % 10

    page.click("[data-testid=tab-history]")
    expect(page).to_have_url(re.compile(r"#history$"))
    items = page.locator("#history > li")
    expect(items).to_have_count(10)
    first = items.first
    expect(first.locator("[data-testid=history-digit]")).to_have_text(str(answer))
    expect(first).to_contain_text("mlp:")
    expect(first.locator(".history-confidence")).to_have_text(re.compile(r"^(\d{1,2}\.\d|100)\u00a0%$"))
    page.wait_for_function(
        "() => { const i = document.querySelector('#history > li img.thumb');"
        " return !!i && !i.classList.contains('is-loading') && i.complete && i.naturalWidth === 28; }")
    expect(first.locator("[data-testid=correction]")).to_be_hidden()

    # Load more: the remaining two, then no more pages.
    more = page.locator("#history-more")
    expect(more).to_be_visible()
    more.click()
    expect(items).to_have_count(12)
    expect(more).to_be_hidden()

    # Correct the newest from here.
    first.locator("[data-testid=feedback-toggle]").click()
    first.locator(f".feedback-digit[data-digit='{wrong}']").click()
    expect(first.locator("[data-testid=correction]")).to_have_text(f"corrected to {wrong}")
    screenshots(page, "history", tmp_path)

    # After a reload the correction comes from the server.
    page.reload()
    expect(page.locator("#history-view")).to_be_visible()
    first = page.locator("#history > li").first
    expect(first.locator("[data-testid=correction]")).to_have_text(f"corrected to {wrong}")
    expect(first.locator(f".feedback-digit[data-digit='{wrong}']")).to_have_attribute("aria-pressed", "true")


def test_signup_explains_password_rules(live_server, browser_page, tmp_path):
    page = browser_page
    open_page(page, live_server.url)
    rules = page.locator("#password-rules")
    expect(rules).to_be_visible()
    for text in ("at least 10 characters", "at least 5 different characters", "name part of your email",
                 "common password"):
        expect(rules).to_contain_text(text)
    screenshots(page, "signin", tmp_path)

    email = new_email()
    page.fill("#login-email", email)
    page.fill("#login-password", "aaaaaaaaaaaa")
    expect(page.locator("#password-rules li[data-rule='distinct']")).to_have_attribute("data-state", "bad")
    expect(page.locator("#password-rules li[data-rule='length']")).to_have_attribute("data-state", "ok")
    page.click("#register-submit")
    error = page.locator("#auth-error")
    expect(error).to_be_visible()
    expect(error).to_contain_text("too easy to guess")
    expect(error).not_to_contain_text("weak_password")

    # An existing account: a sentence, not a code.
    page.fill("#login-password", PASSWORD)
    page.click("#register-submit")
    expect(page.locator("#canvas")).to_be_visible()
    page.click("#logout")
    page.fill("#login-email", email)
    page.fill("#login-password", PASSWORD)
    page.click("#register-submit")
    expect(error).to_contain_text("already exists")


def test_logout_and_sign_in_again(live_server, browser_page):
    page = browser_page
    email = register(page, live_server.url)

    page.click("#logout")
    expect(page.locator("#login-form")).to_be_visible()
    expect(page.locator("#canvas")).to_be_hidden()
    expect(page.locator("#logout")).to_be_hidden()

    # The session is gone on the server too, not just in the page.
    page.reload()
    expect(page.locator("#booting")).to_be_hidden()
    expect(page.locator("#login-form")).to_be_visible()

    # A wrong password is explained; the right one signs in.
    page.fill("#login-email", email)
    page.fill("#login-password", PASSWORD + "-wrong")
    page.click("#login-submit")
    expect(page.locator("#auth-error")).to_have_text("Wrong email or password.")
    expect(page.locator("#canvas")).to_be_hidden()

    page.fill("#login-password", PASSWORD)
    page.press("#login-password", "Enter")   # Enter submits as "Sign in"
    expect(page.locator("#canvas")).to_be_visible()
    expect(page.locator("#user-email")).to_have_text(email)
    expect(page.locator("#auth-error")).to_be_hidden()

    # The session survives a reload (cookie), then sign out for good.
    page.reload()
    expect(page.locator("#canvas")).to_be_visible()
    page.click("#logout")
    expect(page.locator("#login-email")).to_be_visible()
    expect(page.locator("#canvas")).to_be_hidden()


def test_keyboard_sections_and_admin_scope(live_server, browser_page):
    """Tab reaches the section links with a visible focus ring; Enter opens a section and moves focus
    to its heading. An administrator can add the admin scope to a key."""
    from server.services.accounts import create_user

    page = browser_page
    email = new_email()
    create_user(live_server.services, email, PASSWORD, role="admin")
    open_page(page, live_server.url)
    page.fill("#login-email", email)
    page.fill("#login-password", PASSWORD)
    page.press("#login-password", "Enter")
    expect(page.locator("#canvas")).to_be_visible()
    wait_ready(page)

    page.evaluate("() => document.activeElement && document.activeElement.blur()")
    for _ in range(8):
        page.keyboard.press("Tab")
        if page.evaluate("() => document.activeElement.dataset.testid") == "tab-keys":
            break
    else:
        raise AssertionError("Tab never reached the API keys link")
    outline = page.evaluate("() => getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid", outline
    page.keyboard.press("Enter")
    expect(page.locator("#keys-view")).to_be_visible()
    expect(page.locator("#keys-new-title")).to_be_focused()
    expect(page.locator("[data-testid=tab-keys]")).to_have_attribute("aria-current", "page")

    expect(page.locator("#scope-admin-row")).to_be_visible()
    page.fill("#key-name", "deploy")
    page.check("#scope-admin")
    page.press("#key-name", "Enter")   # Enter in the form creates the key
    expect(page.locator("#key-secret")).to_be_visible()
    item = page.locator("#keys li", has_text="deploy")
    expect(item).to_contain_text("admin, predict")
