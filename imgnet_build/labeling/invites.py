"""Invite links for the local web app: one random token per worker, only its hash stored.

    link = invite(workspace, "alice")      # link.token goes into the URL once; re-inviting replaces it
    revoke(workspace, "alice")             # the link and every session made with it stop working
"""

from __future__ import annotations

import dataclasses
import hashlib
import secrets

from sqlalchemy import select
from sqlalchemy.orm import Session

from imgnet_build.errors import BadInput
from imgnet_build.labeling.backends import LocalBackend
from imgnet_build.store import Worker
from imgnet_build.workspace import Workspace

__all__ = ["Invite", "invite", "revoke", "hash_token", "worker_for_token", "BACKEND", "JOIN_PATH"]

BACKEND = LocalBackend.name
JOIN_PATH = "/join/"


@dataclasses.dataclass(frozen=True)
class Invite:
    name: str
    token: str
    renewed: bool  # the worker existed; their previous link no longer works

    @property
    def path(self) -> str:
        return JOIN_PATH + self.token

    def url(self, base_url: str) -> str:
        return base_url.rstrip("/") + self.path


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _check_name(name: str) -> str:
    name = name.strip()
    if not name or len(name) > 255 or any(not char.isprintable() for char in name):
        raise BadInput(f"worker name {name!r} must be 1-255 printable characters")
    return name


def invite(workspace: Workspace, name: str) -> Invite:
    """Create worker `name` on the local backend (or give them a new link) and return the link's token."""
    name = _check_name(name)
    token = secrets.token_urlsafe(32)
    with workspace.session() as session:
        worker = session.scalar(select(Worker).where(Worker.backend == BACKEND, Worker.external_id == name))
        renewed = worker is not None
        if worker is None:
            worker = Worker(backend=BACKEND, external_id=name, name=name)
            session.add(worker)
        worker.token_hash, worker.revoked = hash_token(token), False
    return Invite(name=name, token=token, renewed=renewed)


def revoke(workspace: Workspace, name: str) -> None:
    """Stop worker `name`'s link and sessions; their votes stay."""
    name = _check_name(name)  # stripped as invite stripped it
    with workspace.session() as session:
        worker = session.scalar(select(Worker).where(Worker.backend == BACKEND, Worker.external_id == name))
        if worker is None:
            raise BadInput(f"no invited worker named {name!r}; invite one with: imgnet label invite NAME")
        worker.token_hash, worker.revoked = None, True


def worker_for_token(session: Session, token: str) -> Worker | None:
    """The local worker whose invite token this is, unless revoked."""
    return session.scalar(select(Worker).where(Worker.token_hash == hash_token(token), Worker.backend == BACKEND,
                                               Worker.revoked.is_(False)))
