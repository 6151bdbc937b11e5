"""The browser page end to end: Debian's headless Chromium against a live server and worker.

Needs the ``live_server`` fixture (conftest): ``.url`` of a running web app plus
worker with an MNIST-trained MLP active as ``mlp``, and the ``mnist`` fixture
for a real test-set digit to upload.
"""
from __future__ import annotations

import io
import os
import re
import uuid
from pathlib import Path

import numpy as np
import pytest

from PIL import Image
from playwright.sync_api import expect, sync_playwright

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
    expect(page.locator("#error")).to_be_hidden()
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
    assert re.fullmatch(r"\d{1,3}(\.\d)?%", confidence), confidence
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
    expect(page.locator("#error")).to_be_hidden()

    shot = tmp_path / "page.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 10_000

    # Clear empties the canvas; predicting nothing is refused in the page.
    page.click("#clear")
    page.click("#predict")
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#error")).to_contain_text("Draw a digit")


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


def test_unsupported_file_shows_error(live_server, browser_page, tmp_path):
    page = browser_page
    register(page, live_server.url)
    wait_ready(page)

    fake = tmp_path / "notes.png"
    fake.write_text("this is plain text, not a picture\n" * 4)
    page.set_input_files("#file-input", str(fake))
    expect(page.locator("#file-list li")).to_have_count(1)
    page.click("#predict")

    error = page.locator("#error")
    expect(error).to_be_visible(timeout=PREDICT_TIMEOUT_MS)
    expect(error).to_contain_text(re.compile(r"unsupported", re.I))
    expect(page.locator("#status")).to_have_attribute("data-state", "failed")
    expect(page.locator(".result")).to_have_count(0)
    expect(page.locator("#predict")).to_be_enabled()


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
    expect(page.locator("#error")).to_be_visible()
    expect(page.locator("#canvas")).to_be_hidden()

    page.fill("#login-password", PASSWORD)
    page.press("#login-password", "Enter")   # Enter submits as "Sign in"
    expect(page.locator("#canvas")).to_be_visible()
    expect(page.locator("#user-email")).to_have_text(email)
    expect(page.locator("#error")).to_be_hidden()

    # The session survives a reload (cookie), then sign out for good.
    page.reload()
    expect(page.locator("#canvas")).to_be_visible()
    page.click("#logout")
    expect(page.locator("#login-email")).to_be_visible()
    expect(page.locator("#canvas")).to_be_hidden()
