"""What a hostile or careless client sends, through a real server on a socket: texts no SQL
backend could store, bodies past the limit (chunked ones included), unparsable JSON, and
non-ASCII header values. Each is refused with a clear 4xx before anything is written."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator

import httpx
import pytest
import redis
from helpers import (
    ADMIN,
    API_KEYS,
    AWARD_KEY,
    AWARDER,
    JWT_SECRET,
    READER,
    Clock,
    token,
)
from serving import serve

from api.app import MAX_BODY, create_app
from engine import ScoringEngine
from engine.runtime.settings import Settings
from engine.storage.store import SqlStore

SETTINGS = dict(  # test_api's app: the same keys and secret
    SCORING_API_KEYS=API_KEYS,
    SCORING_JWT_SECRET=JWT_SECRET,
    SCORING_SELF_AWARD_TYPES="daily_login",
)


@pytest.fixture
def server(real_redis: redis.Redis, redis_url: str, clock: Clock, tmp_path) -> Iterator[str]:
    """A real uvicorn server over real Redis and SQLite; yields its base URL."""
    store = SqlStore(f"sqlite:///{tmp_path / 'hostile.db'}")
    store.upgrade()
    engine = ScoringEngine.from_url(redis_url, clock=clock, store=store)
    app = create_app(engine, Settings(**SETTINGS))
    with serve(app) as url:
        yield url
    store.close()


def raw(url: str, head: list[str], body_chunks: Iterator[bytes | None]) -> tuple[int, dict]:
    """Send a request by hand on a socket (chunked when the body comes in chunks): the status
    and JSON body of the answer, read as soon as the server sends it, whatever is left unsent."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as sock:
        sock.sendall(("\r\n".join([*head, f"Host: {host}", "", ""])).encode("utf-8"))
        answer = b""
        for chunk in body_chunks:
            if select.select([sock], [], [], 0 if chunk is not None else 0.05)[0]:
                break  # answered before the body was all sent
            if chunk is None:
                continue  # the client pauses
            try:
                sock.sendall(b"%x\r\n%s\r\n" % (len(chunk), chunk))
            except (BrokenPipeError, ConnectionResetError, TimeoutError):
                break  # the server stopped reading: its answer is waiting
        while b"\r\n\r\n" not in answer:
            more = sock.recv(65536)
            if not more:
                break
            answer += more
        head_bytes, _, rest = answer.partition(b"\r\n\r\n")
        status = int(head_bytes.split()[1])
        headers = dict(
            line.decode().lower().split(": ", 1) for line in head_bytes.split(b"\r\n")[1:]
        )
        length = int(headers.get("content-length", "0"))
        while len(rest) < length:
            more = sock.recv(65536)
            if not more:
                break
            rest += more
        return status, json.loads(rest) if rest else {}


def chunks(total: int, size: int = 64 * 1024) -> Iterator[bytes]:
    """``total`` bytes of a body (JSON whitespace), ``size`` at a time."""
    sent = 0
    while sent < total:
        n = min(size, total - sent)
        yield b" " * n
        sent += n


# -- bodies past the limit --------------------------------------------------------------------


def test_chunked_body_without_credentials_is_refused_before_it_is_read(server: str) -> None:
    """401 after the headers: the 100 MB that would follow are never read."""
    sent = 0

    def counted() -> Iterator[bytes]:
        nonlocal sent
        for chunk in chunks(100 * 1024 * 1024):
            sent += len(chunk)
            yield chunk

    started = time.monotonic()
    status, body = raw(
        server,
        ["POST /v1/users/u1/awards HTTP/1.1", "Content-Type: application/json",
         "Transfer-Encoding: chunked"],
        counted(),
    )  # fmt: skip
    assert status == 401 and body["error"]["code"] == "unauthorized"
    assert sent < 5 * 1024 * 1024, sent  # answered long before the body could have been read
    assert time.monotonic() - started < 5


def test_chunked_body_past_the_limit_is_413_as_soon_as_it_passes(server: str) -> None:
    sent = 0

    def counted() -> Iterator[bytes]:
        nonlocal sent
        for chunk in chunks(MAX_BODY + 1024 * 1024):
            sent += len(chunk)
            yield chunk
        # the body's end is never sent: the server must answer on what it has received
        while True:
            time.sleep(0.05)
            yield b" "

    status, body = raw(
        server,
        ["POST /v1/awards/batch HTTP/1.1", f"X-API-Key: {AWARD_KEY}",
         "Content-Type: application/json", "Transfer-Encoding: chunked"],
        counted(),
    )  # fmt: skip
    assert status == 413 and body["error"]["code"] == "too_large"
    assert sent <= MAX_BODY + 2 * 1024 * 1024


def test_a_chunked_body_under_the_limit_is_served(server: str) -> None:
    payload = json.dumps({"activity_type": "comment", "description": "x" * 200}).encode()
    status, body = raw(
        server,
        ["POST /v1/users/chunky/awards HTTP/1.1", f"X-API-Key: {AWARD_KEY}",
         "Content-Type: application/json", "Transfer-Encoding: chunked"],
        iter([payload[:10], payload[10:], b""]),  # the empty chunk ends the body
    )  # fmt: skip
    assert status == 201, body
    assert body["user"]["total_points"] == 5


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-API-Key": "not-a-key-0123456789abcdef"},
        {"Authorization": "Bearer not.a.token"},
        {"Authorization": "Basic abc"},
    ],
)
def test_bad_credentials_are_401_whatever_the_body(server: str, headers: dict) -> None:
    """Refused before the body is parsed: a broken body without credentials is a 401, not a 422."""
    for path, method in [
        ("/v1/users/u1/awards", "POST"),
        ("/v1/awards/batch", "POST"),
        ("/v1/users/u1/profile", "PUT"),
        ("/v1/quests/1", "PATCH"),
        ("/api/v1/me/thrive-circle/award-points/", "POST"),
    ]:
        r = httpx.request(
            method, server + path, content=b"{not json",
            headers={**headers, "Content-Type": "application/json"},
        )  # fmt: skip
        assert r.status_code == 401, (path, r.text)
        assert r.json()["error"]["code"] == "unauthorized"
        assert r.headers["www-authenticate"] == "Bearer"


def test_a_user_token_is_checked_once_and_still_scoped(server: str) -> None:
    """The guard's authentication is the one the routes use: a user token still awards only
    its own user, and only the self-award types."""
    me = token("tok-user")
    own = httpx.post(
        server + "/v1/users/tok-user/awards", headers=me, json={"activity_type": "daily_login"}
    )
    assert own.status_code == 201, own.text
    other = httpx.post(
        server + "/v1/users/someone/awards", headers=me, json={"activity_type": "daily_login"}
    )
    assert other.status_code == 403


# -- bodies that are not JSON ---------------------------------------------------------------


@pytest.mark.parametrize(
    "content",
    [
        b"[" * 10_000 + b"]" * 10_000,  # nested too deep for the parser
        b'{"activity_type": "comment", "description": "\xff\xfe"}',  # invalid UTF-8
        b'{"activity_type": "comment", "amount": ' + b"9" * 5000 + b"}",  # a 5,000-digit number
        b'{"activity_type": "comment"',  # cut short
        b"\x00\x01\x02",
    ],
    ids=["deep", "utf8", "digits", "short", "binary"],
)
def test_unparsable_bodies_are_422_invalid_json(server: str, real_redis, content: bytes) -> None:
    r = httpx.post(
        server + "/v1/users/j1/awards",
        headers={**AWARDER, "Content-Type": "application/json"},
        content=content,
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["code"] == "invalid_json"
    assert not real_redis.exists("scoring:{s0}:u:j1")


# -- texts SQL could not store --------------------------------------------------------------


QUEST = {"title": "Q", "quest_type": "learning", "difficulty": "easy", "points_reward": 5,
         "activity_type": "comment"}  # fmt: skip


@pytest.mark.parametrize(
    ("method", "path", "body", "field"),
    [
        ("POST", "/v1/users/n1/awards", {"activity_type": "comment", "description": "a\x00b"},
         "description"),
        ("POST", "/api/v1/me/thrive-circle/award-points/",
         {"activity_type": "comment", "amount": 5, "description": "\x00"}, "description"),
        ("PUT", "/v1/users/n1/profile", {"username": "nul\x00"}, "username"),
        ("PUT", "/v1/users/n1/profile", {"display_name": "N\x00L"}, "display_name"),
        ("POST", "/v1/quests", {**QUEST, "title": "Q\x00"}, "title"),
        ("POST", "/v1/quests", {**QUEST, "description": "d\x00"}, "description"),
    ],
    ids=["award", "seed-award", "username", "display-name", "quest-title", "quest-description"],
)  # fmt: skip
def test_nul_in_any_text_is_422_naming_the_field(
    server: str, real_redis: redis.Redis, method: str, path: str, body: dict, field: str
) -> None:
    before = real_redis.dbsize()
    headers = {**(ADMIN if "quests" in path else AWARDER), "X-User-Id": "n1"}
    r = httpx.request(method, server + path, headers=headers, json=body)
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == field
    assert real_redis.dbsize() == before  # nothing written


def test_nul_in_a_batch_item_refuses_that_item_only(server: str) -> None:
    r = httpx.post(
        server + "/v1/awards/batch",
        headers=AWARDER,
        json={"awards": [
            {"user_id": "b1", "activity_type": "comment", "description": "fine"},
            {"user_id": "b2", "activity_type": "comment", "description": "bad\x00"},
        ]},
    )  # fmt: skip
    assert r.status_code == 200, r.text
    results = r.json()["results"]
    assert results[0]["error"] is None
    assert results[1]["error"]["field"] == "description"


# -- headers --------------------------------------------------------------------------------


def test_a_non_ascii_user_header_is_the_same_user_as_the_path(server: str) -> None:
    r = httpx.post(
        server + "/api/v1/me/thrive-circle/award-points/",
        headers={**AWARDER, "X-User-Id": "mé-1".encode()},
        json={"activity_type": "comment", "amount": 5},
    )
    assert r.status_code == 201, r.text
    by_path = httpx.get(server + "/v1/users/m%C3%A9-1", headers=READER).json()
    assert by_path["total_points"] == 5
    by_header = httpx.get(
        server + "/api/v1/me/thrive-circle/my-status/",
        headers={**AWARDER, "X-User-Id": "mé-1".encode()},
    )
    assert by_header.json()["user"]["total_points"] == 5, by_header.text


def test_a_header_that_is_not_utf8_is_422(server: str) -> None:
    r = httpx.post(
        server + "/api/v1/me/thrive-circle/award-points/",
        headers={**AWARDER, "X-User-Id": b"m\xe9-1"},  # Latin-1 bytes, not UTF-8
        json={"activity_type": "comment", "amount": 5},
    )
    assert r.status_code == 422, r.text
    assert r.json()["error"]["field"] == "X-User-Id"


def test_a_non_ascii_idempotency_key_header_is_the_same_key_as_in_a_batch(server: str) -> None:
    first = httpx.post(
        server + "/v1/users/k1/awards",
        headers={**AWARDER, "Idempotency-Key": "clé-ü-1".encode()},
        json={"activity_type": "comment"},
    )
    assert first.status_code == 201, first.text
    again = httpx.post(
        server + "/v1/awards/batch",
        headers=AWARDER,
        json={"awards": [{"user_id": "k1", "activity_type": "comment",
                          "idempotency_key": "clé-ü-1"}]},
    )  # fmt: skip
    replay = again.json()["results"][0]["result"]
    assert replay["replayed"], again.text
    assert replay["point_activity"]["id"] == first.json()["point_activity"]["id"]


def test_a_body_that_stops_arriving_is_408(server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client that sends part of a body and then nothing holds a connection only until the
    body timeout: 408, not a task waiting for ever."""
    import api.app

    monkeypatch.setattr(api.app, "BODY_TIMEOUT", 0.5)

    def stalled() -> Iterator[bytes | None]:
        yield b'{"activity_type": '
        while True:
            yield None  # nothing more is sent

    started = time.monotonic()
    status, body = raw(
        server,
        ["POST /v1/users/slow/awards HTTP/1.1", f"X-API-Key: {AWARD_KEY}",
         "Content-Type: application/json", "Transfer-Encoding: chunked"],
        stalled(),
    )  # fmt: skip
    assert (status, body["error"]["code"]) == (408, "too_slow")
    assert time.monotonic() - started < 5
