"""Who is calling: server API keys with scopes, and user tokens (HS256 JWTs).

Server-to-server calls send ``X-API-Key: <secret>``; the operator configures the keys in
``SCORING_API_KEYS`` as comma-separated ``name:secret:scope+scope`` entries (scopes: ``award``,
``read``, ``admin``). Secrets are compared in constant time and never logged. Users send
``Authorization: Bearer <token>``, an HS256 JWT signed with ``SCORING_JWT_SECRET`` whose ``sub``
is the user id; a user may read only their own data, and award only the activity types listed in
``SCORING_SELF_AWARD_TYPES``.
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, field
from enum import StrEnum

import jwt

from engine.domain.errors import ScoringError

#: Where the request's scope state keeps the :class:`Principal` the guard already authenticated.
PRINCIPAL = "scoring.principal"


class Scope(StrEnum):
    AWARD = "award"
    READ = "read"
    ADMIN = "admin"


class AuthError(ScoringError):
    """Missing or invalid credentials (401)."""

    code = "unauthorized"


class Forbidden(ScoringError):
    """Valid credentials without the right to do this (403)."""

    code = "forbidden"


@dataclass(frozen=True)
class ApiKey:
    name: str
    secret: bytes = field(repr=False)
    scopes: frozenset[Scope]


@dataclass(frozen=True)
class Principal:
    """The caller: a server key (``key`` set) or a user (``user_id`` set, from a token)."""

    key: ApiKey | None = None
    user_id: str | None = None

    @property
    def name(self) -> str:
        return f"key:{self.key.name}" if self.key else f"user:{self.user_id}"

    def require(self, scope: Scope) -> None:
        """A server key must hold ``scope`` (admin implies every scope)."""
        if self.key is not None and not ({scope, Scope.ADMIN} & self.key.scopes):
            raise Forbidden(f"this API key lacks the {scope.value!r} scope")
        if self.key is None and scope is Scope.ADMIN:
            raise Forbidden("user tokens cannot use admin endpoints")

    def require_user(self, user_id: str, scope: Scope) -> None:
        """Access to ``user_id``'s data: a key with ``scope``, or that user's own token."""
        if self.key is not None:
            self.require(scope)
        elif self.user_id != user_id:
            raise Forbidden("a user token gives access to its own user only")


def parse_api_keys(text: str) -> list[ApiKey]:
    """``name:secret:scope+scope, ...`` -> keys; ValueError naming the bad entry."""
    keys = []
    for i, entry in enumerate(e.strip() for e in text.split(",")):
        if not entry:
            continue
        parts = entry.split(":")
        if len(parts) != 3 or not all(parts):
            raise ValueError(f"SCORING_API_KEYS entry {i + 1}: expected name:secret:scope+scope")
        name, secret, scopes = parts
        try:
            parsed = frozenset(Scope(s) for s in scopes.split("+"))
        except ValueError:
            raise ValueError(
                f"SCORING_API_KEYS entry {i + 1} ({name}): scopes are award, read and admin"
            ) from None
        if len(secret) < 16:
            raise ValueError(f"SCORING_API_KEYS entry {i + 1} ({name}): secret under 16 characters")
        keys.append(ApiKey(name, secret.encode(), parsed))
    return keys


class Authenticator:
    """Turns request credentials into a :class:`Principal`."""

    def __init__(self, keys: list[ApiKey], jwt_secret: str | None) -> None:
        self.keys = keys
        self.jwt_secret = jwt_secret

    def from_headers(self, api_key: str | None, authorization: str | None) -> Principal:
        if api_key:
            return Principal(key=self._key(api_key))
        if authorization:
            scheme, _, token = authorization.partition(" ")
            if scheme.lower() != "bearer" or not token.strip():
                raise AuthError("use 'Authorization: Bearer <token>' or 'X-API-Key: <key>'")
            return Principal(user_id=self._user(token.strip()))
        raise AuthError("credentials required: an X-API-Key header or a Bearer user token")

    def _key(self, presented: str) -> ApiKey:
        given = presented.encode("utf-8", "surrogatepass")
        found = None
        for key in self.keys:  # compare with every key, in constant time each
            if hmac.compare_digest(given, key.secret):
                found = key
        if found is None:
            raise AuthError("unknown API key")
        return found

    def _user(self, token: str) -> str:
        if not self.jwt_secret:
            raise AuthError("user tokens are not enabled on this server")
        try:
            claims = jwt.decode(
                token, self.jwt_secret, algorithms=["HS256"], options={"require": ["sub"]}
            )
        except jwt.PyJWTError as exc:
            raise AuthError(f"invalid user token: {exc}") from None
        sub = claims.get("sub")
        if not isinstance(sub, str) or not sub:
            raise AuthError("invalid user token: sub must be the user id")
        return sub
