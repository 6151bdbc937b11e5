"""Per-process caches of what rarely changes, dropped everywhere the moment it changes.

A request would otherwise read its API key, its owner and the active model
version from the database each time. Each process keeps them in a
`TtlCache`; a change (a key revoked, a user changed, a version activated)
is published on one Redis channel and every process listening drops the
entries concerned before the change's next request.

Safety rules:
- a cache answers only while its process is subscribed: when the
  subscription drops, every cache is emptied and bypassed until it is back
  (a message may have been missed meanwhile);
- an entry read from the database is kept only if no invalidation arrived
  while it was being read (the generation check), so a revocation that
  races a lookup is never undone by it;
- every entry also expires after its time to live, a backstop for changes
  made behind the platform's back (SQL by hand).
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Any, Callable, Hashable

import redis

log = logging.getLogger("digitserve.invalidation")


class TtlCache:
    """A small thread-safe map whose entries expire; `generation` moves on every invalidation."""

    def __init__(self, name: str, ttl: float, max_entries: int = 10_000):
        self.name = name
        self.ttl = ttl
        self.max_entries = max_entries
        self.generation = 0
        self._entries: dict[Hashable, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def get(self, key: Hashable, default: Any = None) -> Any:
        entry = self._entries.get(key)
        if entry is None or entry[0] < time.monotonic():
            return default
        return entry[1]

    def put(self, key: Hashable, value: Any, generation: int) -> None:
        """Keep `value` unless an invalidation came after `generation` was read."""
        with self._lock:
            if generation != self.generation:
                return
            if len(self._entries) >= self.max_entries:
                self._entries.clear()  # bounded: a flood of distinct keys cannot grow the process
            self._entries[key] = (time.monotonic() + self.ttl, value)

    def drop(self, predicate: Callable[[Hashable, Any], bool] | None = None) -> None:
        """Drop the entries matching `predicate` (all without one)."""
        with self._lock:
            self.generation += 1
            if predicate is None:
                self._entries.clear()
            else:
                for key in [k for k, (_, v) in self._entries.items() if predicate(k, v)]:
                    del self._entries[key]


class Invalidations:
    """One Redis pub/sub channel of change messages, `topic:value`, and a listener thread.

    `handlers[topic](value)` runs for each message; `on_reset` when the subscription
    starts or drops. Nothing connects until `live()` is first asked.
    """

    def __init__(self, redis_url: str, channel: str, publisher: redis.Redis):
        self.redis_url = redis_url
        self.channel = channel
        self.publisher = publisher
        self.handlers: dict[str, Callable[[str], None]] = {}
        self.caches: list[TtlCache] = []
        self._subscribed = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._stopping = False
        self._pubsub = None

    def cache(self, name: str, ttl: float) -> TtlCache:
        cache = TtlCache(name, ttl)
        self.caches.append(cache)
        return cache

    def through(self, cache: TtlCache, key: Hashable, load: Callable[[], Any]) -> Any:
        """`load()` through `cache` while this process is subscribed (and the cache has a time to
        live); a None result is not kept."""
        live = cache.ttl > 0 and self.live()
        if live:
            found = cache.get(key)
            if found is not None:
                return found
        generation = cache.generation
        found = load()
        if live and found is not None:
            cache.put(key, found, generation)
        return found

    def publish(self, topic: str, value: object = "") -> None:
        """Tell every process (this one first, whether Redis answers or not)."""
        self._dispatch(f"{topic}:{value}")
        try:
            self.publisher.publish(self.channel, f"{topic}:{value}")
        except redis.RedisError as exc:
            # the listeners' subscriptions are down too, so their caches are off: nothing stale is served
            log.warning("could not publish the invalidation %s:%s: %s", topic, value, exc)

    def live(self) -> bool:
        """True while the caches may answer (this process is subscribed)."""
        if self._thread is None:
            self._start()
        return self._subscribed.is_set()

    def close(self) -> None:
        self._stopping = True
        pubsub = self._pubsub
        if pubsub is not None:
            try:
                pubsub.close()  # wakes the listener, which then ends
            except Exception:
                pass

    def _start(self) -> None:
        with self._lock:
            if self._thread is None:
                self._thread = threading.Thread(target=self._listen, name="invalidations", daemon=True)
                self._thread.start()

    def _reset(self) -> None:
        self._subscribed.clear()
        for cache in self.caches:
            cache.drop()

    def _dispatch(self, message: str) -> None:
        topic, _, value = message.partition(":")
        handler = self.handlers.get(topic)
        if handler is not None:
            handler(value)

    def _listen(self) -> None:
        backoff = 0.1
        while not self._stopping:
            connection = redis.Redis.from_url(self.redis_url, socket_connect_timeout=2, socket_timeout=30,
                                              health_check_interval=10)
            pubsub = self._pubsub = connection.pubsub()
            try:
                pubsub.subscribe(self.channel)
                while not self._stopping:
                    message = pubsub.get_message(timeout=10)
                    if message is None:
                        pubsub.ping()  # a silent dead connection surfaces here within the socket timeout
                        continue
                    if message["type"] == "subscribe":
                        for cache in self.caches:
                            cache.drop()
                        self._subscribed.set()
                        backoff = 0.1
                    elif message["type"] == "message":
                        data = message["data"]
                        self._dispatch(data.decode() if isinstance(data, bytes) else str(data))
            except Exception as exc:  # Redis away: caches off until subscribed again
                if self._subscribed.is_set() and not self._stopping:
                    log.warning("invalidation channel lost (%s); caches off until it is back", exc)
            finally:
                self._reset()
                try:
                    pubsub.close()
                    connection.close()
                except Exception:
                    pass
            time.sleep(backoff)
            backoff = min(backoff * 2, 5.0)
