"""The /ui page in a real headless browser (Debian's chromium driven by Playwright) against a real
service on loopback: upload a real clip with the page, wait for it, reconstruct, play source and
reconstruction side by side, check the kept-frame timeline and the per-frame PSNR plot.

Set FRAMERS_UI_SCREENSHOT=docs/ui.png to save the screenshot the README shows.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import write_clip

KEY = "ui-key-0123456789abcdef"
CHROMIUM_ARGS = [
    "--no-sandbox",  # CI runs as root
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",  # no connections to any other host
    "--disable-component-update",
    "--disable-sync",
    "--autoplay-policy=no-user-gesture-required",
]


def chromium_path() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        message = "Debian's chromium is not installed (scripts/bootstrap.sh installs it with the dev extra)"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    return path


@pytest.fixture(scope="module")
def page_stack(service_stacks: Callable[..., Any]) -> Any:
    return service_stacks(workers=1, api_keys=f"{KEY}:tenant-ui", max_upload_bytes=16 * 1024 * 1024)


def test_ui_upload_play_compare(page_stack: Any, tmp_path: Path) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    clip = write_clip(tmp_path / "square.mp4", width=192, height=144, frames=64, fps=25)
    errors: list[str] = []
    external: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 1500})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            own = ("blob:", "data:", page_stack.url)
            page.on("request", lambda r: None if r.url.startswith(own) else external.append(r.url))
            page.goto(f"{page_stack.url}/ui")
            assert page.title() == "FrameRS"
            page.fill("#api-key", KEY)
            page.dispatch_event("#api-key", "change")
            page.set_input_files("#file", str(clip))
            page.click("#upload-btn")
            page.wait_for_function("() => document.getElementById('upload-status').textContent.startsWith('uploaded')")
            assert page.eval_on_selector("#upload-progress", "e => e.style.width") == "100%"
            row = page.locator("#videos tbody tr", has_text="square.mp4")
            row.locator("td.status-done").wait_for(timeout=90_000)
            row.click()
            page.wait_for_function("() => document.getElementById('ratio') !== null")
            assert "bundle =" in page.inner_text("#ratio")
            page.select_option("#rec-codec", "h264")
            page.click("#rec-btn")
            page.wait_for_function("() => document.getElementById('rec-status').textContent === 'reconstruction ready'",
                                   timeout=120_000)
            page.wait_for_function("() => document.querySelector('#psnr-line') !== null", timeout=30_000)
            for video in ("#rec-video", "#source-video"):
                page.wait_for_function(f"() => document.querySelector('{video}').readyState >= 2", timeout=30_000)
                duration = page.eval_on_selector(video, "v => v.duration")
                assert duration == pytest.approx(64 / 25, abs=0.1), video
            # the page shows what the API says: kept frames on the timeline, one PSNR point per frame
            with httpx.Client(base_url=page_stack.url, headers={"X-API-Key": KEY}) as client:
                video_id = client.get("/videos").json()["videos"][0]["id"]
                quality = client.get(f"/quality/{video_id}").json()
            assert page.locator("#timeline rect.kept").count() == len(quality["kept"]) > 2
            points = page.get_attribute("#psnr-line", "points") or ""
            assert len(points.split()) == quality["frames"] == 64
            assert page.locator("#psnr-plot circle.kept").count() == len(quality["kept"])
            assert f"{quality['psnr_mean']:.2f} dB" in page.inner_text("#psnr-note")
            # play both: time advances in both players, the playhead and frame counter follow
            page.click("#play")
            page.wait_for_function("() => document.querySelector('#rec-video').currentTime > 0.5", timeout=30_000)
            assert page.eval_on_selector("#source-video", "v => v.currentTime") > 0.3
            page.click("#play")
            assert page.inner_text("#clock").startswith("frame ")
            page.eval_on_selector("#rec-video", "v => { v.currentTime = 0.5; }")
            page.wait_for_function("() => document.getElementById('clock').textContent.includes('dB')")
            shot = tmp_path / "ui.png"
            page.screenshot(path=str(shot), full_page=True)
            target = os.environ.get("FRAMERS_UI_SCREENSHOT")
            if target:
                shutil.copyfile(shot, target)
        finally:
            browser.close()
    assert shot.stat().st_size > 10_000
    # The page's first listing goes out before the key is typed: that one 401 is expected.
    errors = [e for e in errors if "status of 401" not in e]
    assert not errors, errors
    assert not external, external


def test_ui_lists_older_videos_page_by_page(page_stack: Any, tmp_path: Path) -> None:
    """The list follows the API's cursors: "Show older videos" adds a step (?page_size=1 here; 50
    by default) until none is left (a fresh-user trial: the page only ever asked for the newest
    50). The gateway's own address leads to the page."""
    sync_api = pytest.importorskip("playwright.sync_api")
    with httpx.Client(base_url=page_stack.url, headers={"X-API-Key": KEY}) as client:
        for name in ("older.mp4", "newer.mp4"):
            clip = write_clip(tmp_path / name, width=64, height=48, frames=8, fps=25)
            with clip.open("rb") as f:
                assert client.post("/compress", files={"file": (name, f, "video/mp4")}).status_code == 202
        total = len(client.get("/videos", params={"limit": 100}).json()["videos"])
        root = client.get("/", follow_redirects=False)
        assert root.status_code == 307 and root.headers["location"] == "/ui"
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium_path(), args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.add_init_script(f"localStorage.setItem('framers-api-key', '{KEY}')")
            page.goto(f"{page_stack.url}/ui?page_size=1")
            rows = page.locator("#videos tbody tr")
            page.wait_for_function("() => document.querySelectorAll('#videos tbody tr').length === 1")
            assert "newer.mp4" in rows.first.inner_text()
            for shown in range(2, total + 1):
                page.click("#more-videos")
                page.wait_for_function(f"() => document.querySelectorAll('#videos tbody tr').length === {shown}")
            assert "older.mp4" in page.inner_text("#videos tbody")
            page.wait_for_function("() => document.getElementById('more-videos').hidden")
        finally:
            browser.close()
