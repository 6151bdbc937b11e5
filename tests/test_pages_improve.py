"""The Improve section (feedback review, training jobs) and the gate and search panels of the models
dashboard, end to end: Debian's headless Chromium against the live server (see test_page.py).

The live server runs a prediction worker but no training worker, so a job started from the page stays
queued; the running part of a job's life is written here through the training jobs repository, as a
training worker would."""
from __future__ import annotations

import re

import pytest
from playwright.sync_api import expect

from conftest import training_record
from core.db import unit_of_work
from core.repositories import predictions as predictions_repo
from core.repositories import training as jobs_repo
from test_page import PASSWORD, api_predict, browser_page, chromium, new_email, register, screenshots  # noqa: F401
from test_pages_admin import new_admin, other_page, sign_in  # noqa: F401
from trainers.retrain import decide

pytestmark = pytest.mark.slow


def correct(page, png: bytes, label: int) -> str:
    """Predict one image from this page's session and correct the answer to `label`; the prediction id."""
    [prediction_id] = api_predict(page, png)
    status = page.evaluate(
        """async ([id, label]) => {
             const s = await (await fetch('/api/v1/sessions')).json();
             const r = await fetch(`/api/v1/predictions/${id}/feedback`, {method: 'POST',
               headers: {'Content-Type': 'application/json', 'X-CSRF-Token': s.csrf_token},
               body: JSON.stringify({index: 0, label})});
             return r.status;
           }""",
        [prediction_id, label],
    )
    assert status in (200, 201), status
    return prediction_id


def api_get(page, path: str) -> dict:
    return page.evaluate("async (p) => (await fetch('/api/v1' + p)).json()", path)


def open_improve(page) -> None:
    page.click("[data-testid=tab-improve]")
    expect(page).to_have_url(re.compile(r"#improve$"))
    expect(page.locator("#review-title")).to_be_focused()


def test_admin_reviews_a_correction(live_server, browser_page, other_page, digit_pngs, tmp_path):
    # Someone corrects an answer: a 7 the network may or may not have read.
    register(browser_page, live_server.url)
    expect(browser_page.locator("[data-testid=tab-improve]")).to_be_hidden()   # not for a user
    prediction_id = correct(browser_page, digit_pngs[7], 3)

    page = other_page
    page.set_viewport_size({"width": 1280, "height": 900})
    sign_in(page, live_server.url, new_admin(live_server))
    open_improve(page)
    expect(page.locator("[data-testid=review-pending]")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("[data-testid=review-pending] .count")).to_have_text(re.compile(r"\(\d+\)"))
    item = page.locator(f"[data-testid=review-item][data-prediction='{prediction_id}']")
    expect(item).to_be_visible()
    expect(item.locator("[data-testid=review-label]")).to_have_text("3")
    expect(item.locator("[data-testid=review-predicted]")).to_have_text(re.compile(r"^\d \(\d+\.\d %\)$"))
    # whichever network answered it (another test may have made a second model the default)
    with unit_of_work(live_server.services.sessions) as session:
        row = predictions_repo.get(session, prediction_id)
        model = f"{row.model_name}:{row.model_version}"
    expect(item).to_contain_text(model)
    image = item.locator("img.review-image")
    assert image.evaluate("i => i.complete && i.naturalWidth") == 28
    assert image.evaluate("i => getComputedStyle(i).imageRendering") == "pixelated"
    screenshots(page, "improve-review", tmp_path)
    # an administrator's six tabs fit a phone: no tab's label is cut off
    page.set_viewport_size({"width": 390, "height": 844})
    clipped = page.eval_on_selector_all(
        ".tab", "tabs => tabs.filter(t => t.offsetParent && t.scrollWidth > t.clientWidth).map(t => t.textContent)")
    assert clipped == [], clipped
    page.set_viewport_size({"width": 1280, "height": 900})
    page.emulate_media(color_scheme="dark")
    screenshots(page, "improve-review-dark", tmp_path)
    page.emulate_media(color_scheme="light")

    # Accept it with the keyboard: it leaves the pending list and the API says accepted.
    before = api_get(page, "/feedback?state=accepted&limit=1")["counts"]["accepted"]
    accept = item.locator("[data-testid=review-accept]")
    accept.focus()
    page.keyboard.press("Enter")
    expect(item).to_have_count(0)
    expect(page.locator("#review-status")).to_contain_text("Accepted")
    expect(page.locator("[data-testid=review-accepted] .count")).to_have_text(f"({before + 1})")
    listed = api_get(page, "/feedback?state=accepted&limit=500")
    mine = [s for s in listed["samples"] if s["prediction_id"] == prediction_id]
    assert mine and mine[0]["state"] == "accepted" and mine[0]["label"] == 3, mine

    # It is under "Accepted", where it can be excluded again.
    page.click("[data-testid=review-accepted]")
    accepted = page.locator(f"[data-testid=review-item][data-prediction='{prediction_id}']")
    expect(accepted.locator("[data-testid=review-exclude]")).to_be_visible()
    accepted.locator("[data-testid=review-exclude]").click()
    expect(accepted).to_have_count(0)
    excluded = api_get(page, "/feedback?state=excluded&limit=500")["samples"]
    assert any(s["prediction_id"] == prediction_id for s in excluded)


def test_admin_starts_follows_and_cancels_training_jobs(live_server, browser_page, tmp_path):
    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 900})
    sign_in(page, live_server.url, new_admin(live_server))
    open_improve(page)

    # Retrain mlp: the confirmation says what the gate does; Cancel starts nothing.
    retrain = page.locator("[data-testid=retrain][data-model='mlp']")
    retrain.click()
    dialog = page.locator("#retrain-dialog")
    expect(dialog).to_be_visible()
    expect(dialog).to_contain_text("not worse on MNIST")
    expect(dialog).to_contain_text("strictly better on the held-out corrections")
    page.click("#retrain-cancel")
    expect(dialog).to_be_hidden()
    expect(retrain).to_be_focused()
    retrain.click()
    screenshots(page, "improve-retrain-dialog", tmp_path)
    page.fill("#retrain-epochs", "2")
    page.fill("#retrain-limit", "1000")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/api/v1/training-jobs")) as sent:
        page.click("#retrain-confirm")
    assert sent.value.status == 202
    job_id = sent.value.json()["id"]
    job = page.locator(f"[data-testid=job][data-job='{job_id}']")
    expect(job.locator("[data-testid=job-status]")).to_have_text("queued")
    expect(job).to_contain_text("Retrain mlp")
    expect(job).to_contain_text("Waiting for a training worker")

    # A training worker picks it up and reports two epochs: the page follows it every 2 s.
    with unit_of_work(live_server.services.sessions) as session:
        assert jobs_repo.start(session, job_id, "test-worker")
    for epoch, (loss, acc) in enumerate([(0.9, 0.7), (0.5, 0.85)], 1):
        with unit_of_work(live_server.services.sessions) as session:
            jobs_repo.add_progress(session, job_id, {"type": "epoch", "epoch": epoch, "epochs": 2, "loss": loss,
                                                     "accuracy": acc, "val_loss": loss + 0.1, "val_accuracy": acc - 0.05})
    expect(job.locator("[data-testid=job-status]")).to_have_text("running", timeout=6000)
    expect(job).to_contain_text("epoch 2 of 2")
    assert job.locator("progress").evaluate("p => [p.value, p.max]") == [2, 2]
    expect(job.locator("[data-testid=job-loss] circle")).to_have_count(4)
    expect(job.locator("[data-testid=job-accuracy] circle")).to_have_count(4)
    screenshots(page, "improve-jobs", tmp_path)
    page.emulate_media(color_scheme="dark")
    screenshots(page, "improve-jobs-dark", tmp_path)
    page.emulate_media(color_scheme="light")

    # Cancel the running job: it stops after its epoch; then the worker reports it cancelled.
    job.locator("[data-testid=job-cancel]").click()
    expect(job.locator("[data-testid=job-cancel]")).to_have_text(re.compile("Stopping"))
    with unit_of_work(live_server.services.sessions) as session:
        jobs_repo.finish(session, job_id, jobs_repo.CANCELLED, None, "cancelled after epoch 2")
    expect(job.locator("[data-testid=job-status]")).to_have_text("cancelled", timeout=6000)
    expect(job.locator("[data-testid=job-cancel]")).to_be_hidden()
    expect(job.locator("[data-testid=job-result]")).to_contain_text("nothing was registered")

    # A genetic search with the small defaults; no training worker runs here, so it stays queued.
    expect(page.locator("#tune-population")).to_have_value("4")
    expect(page.locator("#tune-generations")).to_have_value("2")
    page.select_option("#tune-family", "mlp")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/api/v1/training-jobs")) as sent:
        page.click("#tune-start")
    tune = sent.value.json()
    assert tune["spec"] == {**tune["spec"], "family": "mlp", "population": 4, "generations": 2, "seed": 0}
    job = page.locator(f"[data-testid=job][data-job='{tune['id']}']")
    expect(job.locator("[data-testid=job-status]")).to_have_text("queued")
    expect(job).to_contain_text("Genetic search: mlp")
    job.locator("[data-testid=job-cancel]").click()
    expect(job.locator("[data-testid=job-status]")).to_have_text("cancelled")
    assert api_get(page, f"/training-jobs/{tune['id']}")["status"] == "cancelled"

    # A refused start is a sentence next to the form, not a stack trace.
    page.fill("#tune-population", "99")
    page.click("#tune-start")
    expect(page.locator("#tune-error")).to_have_text("Population must be an integer from 2 to 64.")


def test_gate_and_search_panels(live_server, browser_page, tiny_mlp_file, tmp_path):
    registry = live_server.services.registry
    active = registry.get("mlp")
    record = training_record(tiny_mlp_file)
    candidate = {"mnist_accuracy": active.test_accuracy - 0.001, "feedback_accuracy": 0.75}
    before = {"name": "mlp", "version": active.version, "mnist_accuracy": active.test_accuracy,
              "feedback_accuracy": 0.5}
    gate = {**decide(candidate, before, 0.002), "candidate": candidate, "active": before, "mnist_test_size": 10000,
            "feedback": {"accepted": 20, "trained_on": 16, "held_out": 4, "holdout_share": 0.2, "seed": 0,
                         "held_out_refs": []}}
    gated = registry.register("mlp-gated", "mlp", tiny_mlp_file, **record, gate=gate)
    history = [{"generation": 1, "best": 0.91, "mean": 0.85, "individuals": []},
               {"generation": 2, "best": 0.93, "mean": 0.9, "individuals": []},
               {"generation": 3, "best": 0.94, "mean": 0.92, "individuals": []}]
    search = {"family": "mlp", "population": 4, "generations": 3, "seed": 7, "elitism": 1, "epochs": 1,
              "limit": 2000, "fitness": "validation_accuracy", "space": [], "evaluations": 10,
              "best": {"learning_rate": 0.002, "batch_size": 64, "dropout": 0.2}, "best_fitness": 0.94,
              "history": history}
    tuned = registry.register("mlp-tuned", "mlp", tiny_mlp_file, **record, search=search)

    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 900})
    sign_in(page, live_server.url, new_admin(live_server))
    page.click("[data-testid=tab-models]")
    detail = page.locator("#version-detail")

    page.locator(f"[data-model='mlp-gated'] tr[data-version='{gated.version}'] [data-testid=version-details]").click()
    panel = detail.locator("[data-panel=gate]")
    expect(panel.locator("[data-testid=gate-decision]")).to_have_text(
        "Activated: not worse on MNIST (within the tolerance) and better on the held-out feedback.")
    expect(panel).to_contain_text(f"mlp:{active.version} (active then)")
    expect(panel.locator("[data-testid=chart-gate] rect")).to_have_count(4)   # 2 figures x 2 versions
    expect(panel.locator("[data-testid=chart-gate] rect title").first).to_contain_text(f"candidate mlp-gated:{gated.version}")
    expect(detail.locator("[data-panel=search]")).to_have_count(0)
    order = detail.locator("[data-panel]").evaluate_all("ps => ps.map(p => p.dataset.panel)")
    assert order[:3] == ["summary", "gate", "curves"], order      # the decision comes right after the record
    screenshots(page, "panel-gate", tmp_path)

    page.locator(f"[data-model='mlp-tuned'] tr[data-version='{tuned.version}'] [data-testid=version-details]").click()
    panel = detail.locator("[data-panel=search]")
    expect(panel.locator("[data-testid=search-best]")).to_have_text("94.00 %")
    expect(panel.locator("[data-testid=chart-fitness] circle")).to_have_count(6)   # best and mean, 3 generations
    tooltip = panel.locator("[data-testid=chart-fitness] circle title").first.text_content()
    assert tooltip == "generation 1: best 91.00", tooltip
    panel.locator("[data-testid=chart-fitness] summary").click()
    expect(panel.locator("[data-testid=chart-fitness] tbody tr")).to_have_count(3)
    expect(detail.locator("[data-panel=gate]")).to_have_count(0)
    panel.scroll_into_view_if_needed()
    screenshots(page, "panel-search", tmp_path)
    page.emulate_media(color_scheme="dark")
    screenshots(page, "panel-search-dark", tmp_path)


def test_finished_jobs_show_their_result(live_server, browser_page):
    """A succeeded retrain names the version it registered and the gate's decision; a failed job says why."""
    gate = {**decide({"mnist_accuracy": 0.9, "feedback_accuracy": 0.5}, {"mnist_accuracy": 0.95, "feedback_accuracy": 0.5},
                     0.002), "candidate": {}, "active": {}}
    with unit_of_work(live_server.services.sessions) as session:
        done = jobs_repo.create(session, "retrain", {"name": "mlp", "epochs": 1, "limit": 1000, "seed": 0}, None).id
        failed = jobs_repo.create(session, "tune", {"family": "mlp", "name": "mlp", "population": 4, "generations": 2,
                                                    "seed": 0, "elitism": 1, "epochs": 1, "limit": 1000}, None).id
    for job_id in (done, failed):
        with unit_of_work(live_server.services.sessions) as session:
            jobs_repo.start(session, job_id, "test-worker")
    with unit_of_work(live_server.services.sessions) as session:
        jobs_repo.finish(session, done, jobs_repo.SUCCEEDED, {
            "model": {"name": "mlp", "version": 42, "family": "mlp", "active": False}, "test_accuracy": 0.9,
            "gate": gate, "search": None})
        jobs_repo.finish(session, failed, jobs_repo.FAILED, None, "the MNIST files could not be read")

    page = browser_page
    sign_in(page, live_server.url, new_admin(live_server))
    open_improve(page)
    job = page.locator(f"[data-testid=job][data-job='{done}']")
    expect(job.locator("[data-testid=job-status]")).to_have_text("succeeded")
    expect(job.locator("[data-testid=job-result]")).to_contain_text(
        "mlp:42 registered (90.00 % on MNIST), not active. Gate: not activated — worse on MNIST")
    expect(job.locator("[data-testid=job-cancel]")).to_be_hidden()
    job = page.locator(f"[data-testid=job][data-job='{failed}']")
    expect(job.locator("[data-testid=job-status]")).to_have_text("failed")
    expect(job.locator("[data-testid=job-result]")).to_have_text("Failed: The MNIST files could not be read.")


def test_retrain_from_a_model_card(live_server, browser_page, tmp_path):
    page = browser_page
    sign_in(page, live_server.url, new_admin(live_server))
    page.click("[data-testid=tab-models]")
    card = page.locator("[data-testid=model-card][data-model='mlp']")
    button = card.locator("[data-testid=model-retrain]")
    expect(button).to_have_accessible_name(re.compile(r"^Retrain mlp \(active version \d+\)$"))
    button.click()
    expect(page.locator("#retrain-dialog")).to_contain_text("The gate evaluates the candidate")
    page.fill("#retrain-limit", "1000")
    with page.expect_response(lambda r: r.request.method == "POST" and r.url.endswith("/api/v1/training-jobs")) as sent:
        page.click("#retrain-confirm")
    job_id = sent.value.json()["id"]
    assert sent.value.json()["spec"]["limit"] == 1000
    # the page goes where the job is followed
    expect(page).to_have_url(re.compile(r"#improve$"))
    job = page.locator(f"[data-testid=job][data-job='{job_id}']")
    expect(job.locator("[data-testid=job-status]")).to_have_text("queued")
    job.locator("[data-testid=job-cancel]").click()
    expect(job.locator("[data-testid=job-status]")).to_have_text("cancelled")
    page.click("[data-testid=tab-models]")
    expect(card.locator("[data-testid=model-retrain]")).to_be_visible()
    screenshots(page, "models-retrain-button", tmp_path)


def test_a_generator_shows_its_digits_on_the_dashboard(live_server, browser_page, mnist, tmp_path):
    from trainers.gan import train_gan

    result = train_gan(mnist, epochs=1, seed=0, progress=False, max_steps=20, limit=500)
    path = tmp_path / "cgan.keras"
    result.generator.save(path)
    generator = live_server.services.registry.register("cgan-page", "cgan", path)

    page = browser_page
    page.set_viewport_size({"width": 1280, "height": 900})
    sign_in(page, live_server.url, new_admin(live_server))
    page.click("[data-testid=tab-models]")
    page.locator(f"[data-model='cgan-page'] tr[data-version='{generator.version}'] "
                 "[data-testid=version-details]").click()
    grid = page.locator("#version-detail [data-panel=samples] [data-testid=gan-grid]")
    expect(grid).to_be_visible()
    page.wait_for_function("img => img.complete && img.naturalWidth > 0", arg=grid.element_handle(), timeout=30_000)
    width, height = grid.evaluate("img => [img.naturalWidth, img.naturalHeight]")
    assert height > width  # ten rows of eight digits
    grid.scroll_into_view_if_needed()
    screenshots(page, "panel-gan", tmp_path)
