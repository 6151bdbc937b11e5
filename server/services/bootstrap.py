"""All wiring in one place: engine, sessions, Redis, the task queue, the model store and registry."""
from __future__ import annotations

from dataclasses import dataclass

import redis
from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.db import make_engine, make_session_factory
from core.settings import Settings
from models.registry import ModelRegistry
from models.store import ModelStore
from server.queue import TaskQueue
from server.services.admission import Admission
from server.services.catalog import Catalog
from server.services.invalidation import Invalidations, TtlCache


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: redis.Redis
    queue: TaskQueue
    admission: Admission
    store: ModelStore
    registry: ModelRegistry  # writes, listings
    catalog: Catalog  # the lookups each request makes (cached, see invalidation.py)
    invalidations: Invalidations
    credentials: TtlCache  # key id -> (Principal, secret, last marked used)
    users: TtlCache  # user id -> the user's row as a Principal's fields
    training_queue: TaskQueue  # training, retraining and searches: TRAINING_QUEUE_NAME

    def key(self, *parts: object) -> str:
        """A Redis key in this deployment's namespace."""
        return self.settings.redis_prefix + ":".join(str(p) for p in parts)

    def close(self) -> None:
        self.invalidations.close()
        self.engine.dispose()
        self.redis.close()
        self.queue.blocking.close()


def build(settings: Settings) -> Services:
    """Nothing connects here: the engine and the Redis pool connect on first use."""
    pool = {} if settings.database_url.startswith("sqlite") else {
        # kept open: opening MySQL connections under load cost more than the requests themselves
        "pool_size": settings.db_pool_size, "max_overflow": settings.db_pool_size}
    engine = make_engine(settings.database_url, timeout=settings.db_timeout, **pool)
    sessions = make_session_factory(engine)
    # a Redis that accepts connections but hangs fails requests in seconds, not at the OS timeout
    connection = redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=2, socket_timeout=5, health_check_interval=30)
    blocking = redis.Redis.from_url(
        settings.redis_url, socket_connect_timeout=2, socket_timeout=settings.max_wait + 5, health_check_interval=30)
    store = ModelStore(sessions, settings.model_cache_dir)
    tasks = TaskQueue(settings, connection, blocking)
    registry = ModelRegistry(sessions, store)
    invalidations = Invalidations(settings.redis_url, settings.redis_prefix + "invalidate", connection)
    credentials = invalidations.cache("credentials", settings.cache_ttl)
    users = invalidations.cache("users", settings.cache_ttl)
    # "key:<key id>" when a key is revoked; "user:<id>" when a user changes (role, password, removal)
    invalidations.handlers["key"] = lambda key_id: credentials.drop(lambda k, _v: k == key_id)

    def user_changed(user_id: str) -> None:
        credentials.drop(lambda _k, v: str(v[0].user_id) == user_id)
        users.drop(lambda k, _v: str(k) == user_id)

    invalidations.handlers["user"] = user_changed
    return Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        redis=connection,
        queue=tasks,
        admission=Admission(settings, sessions, tasks),
        store=store,
        registry=registry,
        catalog=Catalog(registry, invalidations, settings.cache_ttl),
        invalidations=invalidations,
        credentials=credentials,
        users=users,
        training_queue=TaskQueue(settings, connection, blocking, name=settings.training_queue_name),
    )
