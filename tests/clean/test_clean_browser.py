"""One real browser session on the cleaning page (Playwright + Debian's chromium, as
tests/serve/test_browser.py): relabel one file, delete one, reload and see both decisions,
apply (files move), undo (every file and hash as before)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow  # a real chromium and a real server process


def test_relabel_delete_reload_apply_undo(fresh, models, web, helpers, browser):
    root = fresh.root
    error, true = fresh.errors[0]
    copy = fresh.exact[1]
    before = helpers.file_hashes(root)
    with web.server(root, models.checkpoint) as server:
        page = browser.new_page(viewport={"width": 1200, "height": 900})
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(server.url + "/")
        card = page.locator(f'.card[data-path="{error}"]')
        card.wait_for()
        assert "label: " in card.locator(".given").text_content()
        page.wait_for_function(  # the thumbnail arrived and decoded
            'p => { const i = document.querySelector(`.card[data-path="${p}"] img`);'
            " return i.complete && i.naturalWidth > 0; }",
            arg=error,
        )
        card.locator(".relabel-to").select_option(true)
        card.locator(".relabel").click()
        page.wait_for_selector("#status:has-text('saved')")
        dup = page.locator(f'.card[data-path="{copy}"]')
        dup.locator(".delete").click()
        page.wait_for_function(
            'p => document.querySelector(`.card[data-path="${p}"] .decision`)'
            ".textContent.includes('delete')",
            arg=copy,
        )
        page.reload()
        card = page.locator(f'.card[data-path="{error}"]')
        card.wait_for()
        assert card.locator(".decision").text_content() == f"decision: relabel to {true}"
        assert page.locator(f'.card[data-path="{copy}"] .decision').text_content() == (
            "decision: delete"
        )
        page.click("#apply")
        page.wait_for_selector("#status:has-text('applied')")
        assert "1 moved to the trash, 1 relabelled" in page.text_content("#status")
        assert not (root / error).exists() and (root / "cleaned.csv").is_file()
        assert (root / ".fastcore-cv/trash" / copy).is_file()
        page.keyboard.press("u")  # undo, from the keyboard
        page.wait_for_selector("#status:has-text('undone')")
        assert page.text_content("#error") == "" and errors == []
    assert helpers.file_hashes(root) == before
