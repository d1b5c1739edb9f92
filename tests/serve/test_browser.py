"""One real browser: Debian's chromium, driven by Playwright, uploads a photo on the page and
sees the label. Needs `apt-get install -y chromium` (.ci/run does it) and the Python package
playwright (never `playwright install`: the system chromium is used)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # a real chromium

SCREENSHOT = Path("/tmp/fastcore_cv_serve_page.png")


def test_upload_a_photo_and_see_the_label(server, chelsea_jpeg, kit, browser):
    page = browser.new_page(viewport={"width": 800, "height": 900})
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(server.url + "/")
    page.wait_for_selector("#model:not(:empty)")
    assert "3 classes" in page.text_content("#model")
    page.set_input_files("#file", str(chelsea_jpeg))
    page.wait_for_selector("#result:not([hidden])", timeout=15_000)
    label = page.text_content("#label")
    assert label in kit.classes
    rows = page.locator("#bars .row")
    assert rows.count() == 3  # every class with its bar
    assert rows.first.locator(".name").text_content() == label
    assert "ms" in page.text_content("#latency")
    assert page.evaluate("document.getElementById('preview').naturalWidth") == 451
    assert page.text_content("#error") == "" and errors == []
    page.screenshot(path=str(SCREENSHOT), full_page=True)
    page.set_input_files(  # a bad file: the page says so, the server stays up
        "#file", files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"hi"}]
    )
    page.wait_for_selector("#error:not(:empty)")
    assert "not an image" in page.text_content("#error")
    assert SCREENSHOT.stat().st_size > 10_000


def test_the_page_shows_the_model_id_and_not_sure(server, model_path, chelsea_jpeg, kit, browser):
    """?threshold=1 on the page's address goes to /predict: no answer reaches 100%, so the
    page says "Not sure" with its best guess; the model id from /metadata is shown."""
    from fastcore_cv.export import Predictor

    model_id = Predictor(model_path, warmup=0).info.model_id
    page = browser.new_page()
    page.goto(server.url + "/?threshold=1")
    page.wait_for_selector("#modelid:not(:empty)")
    assert model_id in page.text_content("#modelid")
    page.set_input_files("#file", str(chelsea_jpeg))
    page.wait_for_selector("#result:not([hidden])", timeout=15_000)
    label = page.text_content("#label")
    assert label.startswith("Not sure (best guess: ")
    assert any(c in label for c in kit.classes)
