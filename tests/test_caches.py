"""Per-process caches of keys, users and active versions, and their invalidation across processes.

Two `Services` built from the same settings stand for two processes (each has
its own caches and its own subscription), against the real MariaDB and Redis.
"""
from __future__ import annotations

import time

import pytest
import sqlalchemy as sa

from conftest import make_settings
from core.errors import Unauthenticated
from server.services import accounts
from server.services.accounts import Principal
from server.services.bootstrap import build
from server.services.invalidation import TtlCache


def wait_live(services, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not services.invalidations.live():
        assert time.monotonic() < deadline, "the invalidation listener never subscribed"
        time.sleep(0.02)


def wait_until(condition, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


# -- the cache itself ----------------------------------------------------------------------------


def test_an_entry_read_before_an_invalidation_is_not_kept():
    cache = TtlCache("t", ttl=60)
    generation = cache.generation
    cache.drop()  # a revocation arrives while the lookup is in flight
    cache.put("k", "stale", generation)
    assert cache.get("k") is None
    cache.put("k", "fresh", cache.generation)
    assert cache.get("k") == "fresh"


def test_entries_expire_and_drop_by_predicate():
    cache = TtlCache("t", ttl=0.05)
    cache.put("a", 1, cache.generation)
    cache.put("b", 2, cache.generation)
    cache.drop(lambda key, value: value == 1)
    assert cache.get("a") is None and cache.get("b") == 2
    time.sleep(0.06)
    assert cache.get("b") is None


def test_the_cache_is_bounded():
    cache = TtlCache("t", ttl=60, max_entries=3)
    for i in range(10):
        cache.put(i, i, cache.generation)
    assert len(cache._entries) <= 3


# -- across processes ------------------------------------------------------------------------------


@pytest.fixture
def second(settings):
    """The same deployment seen from another process."""
    other = build(settings)
    yield other
    other.close()


def make_key(services, email="cache@example.com") -> tuple[Principal, str, str]:
    user = accounts.create_user(services, email, "a-long-and-varied-passphrase-9")
    owner = Principal(user["id"], user["email"], user["role"], "session")
    key = accounts.create_key(services, owner, {"name": "k", "scopes": ["predict"]})
    return owner, key["key_id"], key["secret"]


def test_a_revoked_key_is_refused_at_once_by_a_process_that_cached_it(services, second):
    wait_live(services)
    wait_live(second)
    owner, key_id, secret = make_key(services)
    token = f"{key_id}.{secret}"
    assert accounts.verify_bearer(second, token).user_id == owner.user_id
    assert second.credentials.get(key_id) is not None  # cached in the other process
    # a second use is answered from the cache: no database involved
    with second.engine.begin() as conn:
        conn.execute(sa.text("UPDATE api_keys SET name = 'renamed' WHERE key_id = :k"), {"k": key_id})
    assert accounts.verify_bearer(second, token).user_id == owner.user_id

    accounts.revoke_key(services, owner, key_id)
    wait_until(lambda: second.credentials.get(key_id) is None, timeout=2)
    with pytest.raises(Unauthenticated):
        accounts.verify_bearer(second, token)


def test_a_user_change_drops_their_keys_everywhere(services, second):
    wait_live(services)
    wait_live(second)
    owner, key_id, secret = make_key(services)
    accounts.verify_bearer(second, f"{key_id}.{secret}")
    with services.engine.begin() as conn:
        conn.execute(sa.text("UPDATE users SET role = 'admin' WHERE id = :u"), {"u": owner.user_id})
    accounts.user_changed(services, owner.user_id)
    wait_until(lambda: second.credentials.get(key_id) is None, timeout=2)
    assert accounts.verify_bearer(second, f"{key_id}.{secret}").role == "admin"


def test_an_activation_reaches_another_process_at_once(services, second, tiny_mlp_file):
    wait_live(services)
    wait_live(second)
    services.registry.register("mlp", "mlp", tiny_mlp_file, activate=True)
    services.registry.register("mlp", "mlp", tiny_mlp_file)
    assert second.catalog.get("mlp").version == 1
    assert second.catalog.active_versions()["mlp"].version == 1
    services.registry.activate("mlp", 2)
    wait_until(lambda: second.catalog.get("mlp").version == 2, timeout=2)
    assert second.catalog.active_versions()["mlp"].version == 2


def test_with_redis_away_the_caches_are_bypassed(mysql_db, redis_prefix, tmp_path, private_redis):
    """A revocation made while the channel is down cannot be announced: nothing may be served
    from a cache then, and the caches come back when Redis does."""
    one = build(make_settings(mysql_db, redis_prefix, tmp_path, redis_url=private_redis.url))
    try:
        wait_live(one)
        owner, key_id, secret = make_key(one)
        accounts.verify_bearer(one, f"{key_id}.{secret}")
        assert one.credentials.get(key_id) is not None
        private_redis.stop()
        wait_until(lambda: not one.invalidations.live(), timeout=15)
        assert one.credentials.get(key_id) is None
        with one.engine.begin() as conn:  # revoked by a process that could not publish
            conn.execute(sa.text("UPDATE api_keys SET revoked_at = NOW() WHERE key_id = :k"), {"k": key_id})
        with pytest.raises(Unauthenticated):
            accounts.verify_bearer(one, f"{key_id}.{secret}")
        private_redis.start()
        wait_live(one, timeout=20)
    finally:
        one.close()


def test_cache_ttl_zero_turns_the_caches_off(mysql_db, redis_prefix, tmp_path):
    one = build(make_settings(mysql_db, redis_prefix, tmp_path, cache_ttl=0))
    try:
        owner, key_id, secret = make_key(one)
        accounts.verify_bearer(one, f"{key_id}.{secret}")
        assert one.credentials.get(key_id) is None
    finally:
        one.close()
