"""The dashboard in headless Chromium, driven with Playwright: it loads without credentials from
127.0.0.1, shows the board, the tiers and the upgrades, and a row changes within 2 s of an award
made through the API.

The browser is the system's Chromium (the Debian ``chromium`` package, which ``.ci/run``
installs), or ``$CHROMIUM`` (a name on ``PATH`` or a path); Playwright never downloads one
(``playwright install`` is not needed). Skipped when there is no Chromium, except on CI
(``CI`` set), where its absence is a failure. ``SCORING_SCREENSHOT=docs/dashboard.png`` keeps
the test's screenshot there (the README's picture); otherwise it goes to the test's temporary
directory.
"""

from __future__ import annotations

import os
import random
import re
import shutil
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis
from helpers import PLAIN_RULES
from playwright.sync_api import Page, expect, sync_playwright
from serving import serve

from api.app import create_app
from engine import ScoringEngine
from engine.runtime.settings import Settings

AWARD_KEY = "browser-award-key-0123456789"
PEOPLE = [("ann", "Ann Lee"), ("bo", "Bo Sørensen"), ("cy", "Cy Okafor"), ("dee", "Dee Park"),
          ("eli", "Eli Novak"), ("fay", "Fay Haddad"), ("gus", "Gus Moreau"),
          ("hana", "Hana Ito"), ("ivo", "Ivo Petrov"), ("jun", "Jun Chen"),
          ("kai", "Kai Müller"), ("lea", "Lea Rossi")]  # fmt: skip

#: Headless on a machine whose internet is closed: without the background-networking flags
#: Chromium keeps trying to reach Google's services. (Playwright adds ``--headless`` itself.)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--disable-dev-shm-usage"]  # fmt: skip


def find_chromium() -> str | None:
    """``$CHROMIUM`` when set (and then only it, so that pointing it at nothing hides the
    browser), else the system's Chromium."""
    if name := os.environ.get("CHROMIUM"):
        return shutil.which(name)
    for name in ("chromium", "chromium-browser", "google-chrome", "/usr/bin/chromium"):
        if path := shutil.which(name):
            return path
    return None


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs the Debian package)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture
def page(chromium: str) -> Iterator[Page]:
    """One page of a headless Chromium, 1360 × 857, English number formatting.

    Playwright's sync API runs an asyncio loop of its own in this thread (and marks it as
    running here between its calls), so nothing else in the test may use asyncio in this
    thread: the app runs in ``serve()``'s thread, on uvicorn's loop, and the test's other calls
    (httpx, redis) are synchronous. The loop is gone again when this fixture ends."""
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=chromium, headless=True, args=CHROMIUM_ARGS)
        try:
            # the README picture's size (what the window of 1360 × 1000 left to the page)
            context = browser.new_context(viewport={"width": 1360, "height": 857}, locale="en-US")
            yield context.new_page()
        finally:
            browser.close()


@pytest.fixture
def populated(real_redis: redis.Redis) -> ScoringEngine:
    eng = ScoringEngine(real_redis, rules=PLAIN_RULES)
    rng = random.Random(7)
    mix = ["quiz_complete", "comment", "project_create", "project_update", "reaction"]
    now = datetime.now(UTC)
    for i, (uid, name) in enumerate(PEOPLE):
        eng.set_profile(uid, display_name=name)
        days = rng.randint(1, 9)  # a streak of that many days, ending today
        for n in range(3 + 2 * (len(PEOPLE) - i)):
            eng.award(uid, rng.choice(mix), occurred_at=now - timedelta(days=n % days))
    return eng


def test_a_row_changes_within_2_s_of_an_award(
    populated: ScoringEngine, page: Page, tmp_path: Path
) -> None:
    # the embedded default (no REDIS_URL, whatever the tests' Redis is): loopback reads freely
    settings = Settings(SCORING_API_KEYS=f"app:{AWARD_KEY}:award+read", REDIS_URL=None)
    app = create_app(populated, settings)
    with serve(app) as base:
        page.goto(f"{base}/#rows=12")

        # no credentials: the browser is a loopback client on the embedded default
        rows = page.locator("#leaderboard tbody tr")
        expect(rows).to_have_count(12)
        expect(page.locator("#status")).to_have_text("live")
        expect(page.locator("#keyform")).to_be_hidden()
        users = rows.evaluate_all("trs => trs.map(tr => tr.dataset.user)")
        assert sorted(users) == sorted(uid for uid, _ in PEOPLE)
        expect(page.locator("#tiers li")).to_have_count(5)
        expect(page.locator("#upgrades li").first).to_be_visible()
        boards = page.locator("#board option").evaluate_all("os => os.map(o => o.value)")
        assert boards[:4] == ["all_time", "month", "week", "day"]

        # an award through the API: lea's row shows it within 2 s
        lea = page.locator('#leaderboard tr[data-user="lea"]')
        points = lea.locator(".points")
        before = int(points.inner_text().replace(",", ""))
        sent = time.monotonic()
        response = httpx.post(
            f"{base}/v1/users/lea/awards",
            json={"activity_type": "project_create", "amount": 400},
            headers={"X-API-Key": AWARD_KEY},
            timeout=5,
        )
        assert response.status_code == 201, response.text
        expect(points).to_have_text(f"{before + 400:,}", timeout=2000)
        assert time.monotonic() - sent < 2.0
        # lea climbed: her row flashed; her upgrade is in the feed
        expect(lea).to_have_class(re.compile(r"\bchanged\b"))
        expect(page.locator("#upgrades li").first).to_contain_text("Lea Rossi")

        # the picture, with the row's flash run to its end ("disabled" finishes animations)
        shot = Path(os.environ.get("SCORING_SCREENSHOT") or tmp_path / "dashboard.png")
        page.screenshot(path=shot, animations="disabled")
        assert shot.stat().st_size > 10_000

        # another board from the selector: only the type's points
        page.locator("#board").select_option("type:project_create")
        expect(page).to_have_url(f"{base}/#rows=12&board=type%3Aproject_create")
        expected = populated.leaderboard("type:project_create").rank("lea").score
        expect(points).to_have_text(f"{expected:,}", timeout=3000)
