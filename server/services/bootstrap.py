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


@dataclass
class Services:
    settings: Settings
    engine: Engine
    sessions: sessionmaker[Session]
    redis: redis.Redis
    queue: TaskQueue
    admission: Admission
    store: ModelStore
    registry: ModelRegistry
    training_queue: TaskQueue  # training, retraining and searches: TRAINING_QUEUE_NAME

    def key(self, *parts: object) -> str:
        """A Redis key in this deployment's namespace."""
        return self.settings.redis_prefix + ":".join(str(p) for p in parts)

    def close(self) -> None:
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
    return Services(
        settings=settings,
        engine=engine,
        sessions=sessions,
        redis=connection,
        queue=tasks,
        admission=Admission(settings, sessions, tasks),
        store=store,
        registry=ModelRegistry(sessions, store),
        training_queue=TaskQueue(settings, connection, blocking, name=settings.training_queue_name),
    )
