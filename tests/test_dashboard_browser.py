"""The dashboard in headless Chromium: it loads without credentials from 127.0.0.1, shows the
board, the tiers and the upgrades, and a row changes within 2 s of an award made through the API.

Skipped when no Chromium is installed, except on CI (``CI`` set), where ``.ci/run`` installs
it and its absence is a failure. ``SCORING_SCREENSHOT=docs/dashboard.png`` keeps the test's
screenshot there (the README's picture); otherwise it goes to the test's temporary directory.
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import redis

from api.app import create_app
from engine import ScoringEngine
from engine.settings import Settings
from tests.browser import Browser, find_chromium
from tests.conftest import PLAIN_RULES
from tests.serving import serve

AWARD_KEY = "browser-award-key-0123456789"
PEOPLE = [("ann", "Ann Lee"), ("bo", "Bo Sørensen"), ("cy", "Cy Okafor"), ("dee", "Dee Park"),
          ("eli", "Eli Novak"), ("fay", "Fay Haddad"), ("gus", "Gus Moreau"),
          ("hana", "Hana Ito"), ("ivo", "Ivo Petrov"), ("jun", "Jun Chen"),
          ("kai", "Kai Müller"), ("lea", "Lea Rossi")]  # fmt: skip


@pytest.fixture(scope="module")
def chromium() -> str:
    path = find_chromium()
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("chromium is not installed (.ci/run installs the Debian package)")
        pytest.skip("chromium is not installed (apt-get install chromium)")
    return path


@pytest.fixture
def browser(chromium: str) -> Iterator[Browser]:
    b = Browser(chromium)
    yield b
    b.close()


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
    browser: Browser, populated: ScoringEngine, tmp_path: Path
) -> None:
    app = create_app(populated, Settings(SCORING_API_KEYS=f"app:{AWARD_KEY}:award+read"))
    with serve(app) as base:
        browser.open(f"{base}/#rows=12")
        # no credentials: the browser is a loopback client on the embedded default
        browser.wait_for("document.querySelectorAll('#leaderboard tbody tr').length === 12")
        assert browser.js("document.getElementById('status').textContent") == "live"
        first = browser.js("""[...document.querySelectorAll('#leaderboard tbody tr')].map(
            tr => [tr.dataset.user, tr.querySelector('.points').textContent])""")
        assert sorted(uid for uid, _ in first) == sorted(uid for uid, _ in PEOPLE)
        assert browser.js("document.querySelectorAll('#tiers li').length") == 5
        assert browser.wait_for("document.querySelectorAll('#upgrades li').length")
        options = browser.js("[...document.querySelectorAll('#board option')].map(o => o.value)")
        assert options[:4] == ["all_time", "month", "week", "day"]

        row = "document.querySelector('#leaderboard tr[data-user=\"lea\"] .points').textContent"
        before = int(browser.js(row).replace(",", ""))
        sent = time.monotonic()
        response = httpx.post(
            f"{base}/v1/users/lea/awards",
            json={"activity_type": "project_create", "amount": 400},
            headers={"X-API-Key": AWARD_KEY},
            timeout=5,
        )
        assert response.status_code == 201, response.text
        browser.wait_for(f"{row} === '{before + 400:,}'", timeout=2.0)
        took = time.monotonic() - sent
        assert took < 2.0
        # lea climbed: her row moved up and flashed; her upgrade is in the feed
        assert browser.js("document.querySelector('#leaderboard tr[data-user=\"lea\"]')"
                          ".classList.contains('changed')")  # fmt: skip
        browser.wait_for("document.querySelector('#upgrades li').textContent.includes('Lea Rossi')")
        time.sleep(1.3)  # let the row's flash fade before the picture
        shot = Path(os.environ.get("SCORING_SCREENSHOT") or tmp_path / "dashboard.png")
        browser.screenshot(shot)
        assert shot.stat().st_size > 10_000

        # another board from the selector: only the type's points
        browser.js("""const s = document.getElementById('board'); s.value = 'type:project_create';
                      s.dispatchEvent(new Event('change'));""")
        browser.wait_for("location.hash === '#rows=12&board=type%3Aproject_create'")
        expected = populated.leaderboard("type:project_create").rank("lea").score
        browser.wait_for(f"{row} === '{expected:,}'", timeout=3.0)
