"""Identity: per-researcher API tokens, stored only as their sha256.

A token is 32 random bytes (``pw_`` + URL-safe base64), shown once when the
researcher is created; the database keeps ``sha256(token)``, so a leaked database
does not leak working tokens. Roles: ``researcher`` sees and cancels only their own
jobs; ``admin`` sees all.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from typing import Literal

import sqlalchemy as sa

from pitwall_executor.jobs.schema import researchers, utcnow
from pitwall_executor.jobs.store import MetadataStore

Role = Literal["researcher", "admin"]
TOKEN_PREFIX = "pw_"
_NAME = re.compile(r"^[A-Za-z0-9_.-]{1,64}$")


@dataclass(frozen=True)
class Researcher:
    """Who is calling the API."""

    name: str
    role: Role

    @property
    def is_admin(self) -> bool:
        return self.role == "admin"

    def may_see(self, owner: str) -> bool:
        """Whether this caller may read, cancel or fetch the report of ``owner``'s job."""
        return self.is_admin or self.name == owner


class ResearcherExistsError(ValueError):
    """A researcher with this name already exists."""


def token_digest(token: str) -> str:
    """The stored form of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def create_researcher(store: MetadataStore, name: str, *, admin: bool = False) -> str:
    """Create a researcher and return their new token; the token is not stored anywhere."""
    if not _NAME.match(name):
        raise ValueError(f"researcher name {name!r} must be 1-64 letters, digits, '_', '.' or '-'")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with store.engine.begin() as conn:
        taken = conn.execute(
            sa.select(researchers.c.name).where(researchers.c.name == name)
        ).first()
        if taken is not None:
            raise ResearcherExistsError(
                f"researcher {name!r} already exists; pick another name or rotate their token")
        conn.execute(researchers.insert().values(
            name=name, role="admin" if admin else "researcher",
            token_sha256=token_digest(token), created_at=utcnow(),
        ))
    return token


def authenticate(store: MetadataStore, token: str) -> Researcher | None:
    """The researcher holding ``token``, or None for an unknown token (blocking DB call)."""
    if not token.startswith(TOKEN_PREFIX) or len(token) > 128:
        return None
    digest = token_digest(token)
    with store.engine.connect() as conn:
        row = conn.execute(
            sa.select(researchers.c.name, researchers.c.role, researchers.c.token_sha256)
            .where(researchers.c.token_sha256 == digest)
        ).first()
    # The lookup is by digest; compare again in constant time for good measure.
    if row is None or not hmac.compare_digest(str(row[2]), digest):
        return None
    role: Role = "admin" if row[1] == "admin" else "researcher"
    return Researcher(name=str(row[0]), role=role)


def bearer_token(header: str | None) -> str | None:
    """The token of an ``Authorization: Bearer <token>`` header, or None."""
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def local_token(store: MetadataStore, name: str) -> str:
    """A new token of the machine's local researcher ``name`` (docs/architecture.md §7):
    created if missing, else their token is replaced (the embedded stack keeps the one
    token of a data dir in a file and calls this only when that file is gone)."""
    try:
        return create_researcher(store, name)
    except ResearcherExistsError:
        token = TOKEN_PREFIX + secrets.token_urlsafe(32)
        with store.engine.begin() as conn:
            conn.execute(researchers.update().where(researchers.c.name == name)
                         .values(token_sha256=token_digest(token)))
        return token
