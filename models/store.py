"""Content-addressed model files: bytes live in the database, a verified copy in a local cache.

A worker on another machine needs only DATABASE_URL: it fetches the chunks,
checks their SHA-256 and keeps the file in MODEL_CACHE_DIR.
"""
from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

from sqlalchemy import delete, func, select
from sqlalchemy.orm import Session, sessionmaker

from core.db import ModelBlob, ModelBlobChunk, unit_of_work

CHUNK_SIZE = 1024 * 1024


class StoreError(Exception):
    pass


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(CHUNK_SIZE), b""):
            digest.update(block)
    return digest.hexdigest()


class ModelStore:
    def __init__(self, sessions: sessionmaker[Session], cache_dir: Path):
        self.sessions = sessions
        self.cache_dir = Path(cache_dir)

    def put(self, path: Path, session: Session | None = None) -> str:
        """Store a file's bytes once under their SHA-256; returns the hash."""
        data = Path(path).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        if session is None:
            with unit_of_work(self.sessions) as own:
                self._insert(own, sha, data)
        else:
            self._insert(session, sha, data)
        return sha

    @staticmethod
    def _insert(session: Session, sha: str, data: bytes) -> None:
        if session.get(ModelBlob, sha) is None:
            session.add(ModelBlob(sha256=sha, size=len(data)))
            session.flush()
        elif session.scalar(select(func.count()).where(ModelBlobChunk.sha256 == sha)):
            return  # already stored (a dropped file's row has no chunks and is filled again)
        for seq, start in enumerate(range(0, max(len(data), 1), CHUNK_SIZE)):
            session.add(ModelBlobChunk(sha256=sha, seq=seq, data=data[start : start + CHUNK_SIZE]))
        session.flush()

    def drop_bytes(self, sha: str, session: Session) -> None:
        """Free an unused file's bytes; its `model_blobs` row stays for the versions' history."""
        session.execute(delete(ModelBlobChunk).where(ModelBlobChunk.sha256 == sha))
        cached = self.cache_path(sha)
        if cached.exists():
            cached.unlink()

    def cache_path(self, sha: str) -> Path:
        return self.cache_dir / sha[:2] / f"{sha}.keras"

    def fetch(self, sha: str) -> Path:
        """A verified local copy of the file; a missing or corrupted cache entry is fetched again."""
        path = self.cache_path(sha)
        if path.exists() and sha256_file(path) == sha:
            return path
        with unit_of_work(self.sessions) as session:
            blob = session.get(ModelBlob, sha)
            if blob is None:
                raise StoreError(f"model file {sha} is not in the store")
            chunks = session.scalars(
                select(ModelBlobChunk.data).where(ModelBlobChunk.sha256 == sha).order_by(ModelBlobChunk.seq)
            ).all()
        data = b"".join(chunks)
        if len(data) != blob.size or hashlib.sha256(data).hexdigest() != sha:
            raise StoreError(f"model file {sha} is corrupted in the database")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".fetch-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.replace(tmp, path)
        return path
