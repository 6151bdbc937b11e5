"""The batch former shared by admission and v2 inference (pure threading logic, no services)."""
from __future__ import annotations

import threading
import time

import pytest

from server.services.batching import Batcher


def recorder(delay: float = 0.0):
    batches: list[list[int]] = []

    def process(batch):
        time.sleep(delay)
        batches.append([slot.item for slot in batch])
        for slot in batch:
            if slot.item < 0:
                slot.error = ValueError(f"bad item {slot.item}")
            else:
                slot.result = slot.item * 10
    return batches, process


def test_a_lone_request_never_waits_for_the_window():
    batches, process = recorder()
    batcher = Batcher("t", process, max_size=64, max_wait=5.0)
    started = time.perf_counter()
    with batcher.arriving() as ticket:
        assert batcher.submit(7, ticket) == 70
    assert time.perf_counter() - started < 1.0 and batches == [[7]]


def test_requests_still_arriving_join_the_batch():
    batches, process = recorder()
    batcher = Batcher("t", process, max_size=64, max_wait=5.0)
    results, gate = {}, threading.Event()

    def slow(item):  # still being "preprocessed" when the first one is handed over
        with batcher.arriving() as ticket:
            gate.wait(5)
            results[item] = batcher.submit(item, ticket)

    threads = [threading.Thread(target=slow, args=(i,)) for i in (2, 3)]
    for thread in threads:
        thread.start()
    while batcher._arriving < 2:
        time.sleep(0.001)

    def first():
        with batcher.arriving() as ticket:
            results[1] = batcher.submit(1, ticket)

    lead = threading.Thread(target=first)
    lead.start()
    time.sleep(0.05)
    gate.set()
    for thread in [lead, *threads]:
        thread.join(10)
    assert results == {1: 10, 2: 20, 3: 30}
    assert [sorted(batch) for batch in batches] == [[1, 2, 3]]  # one batch; the two late ones in either order


def test_the_wait_is_bounded_and_a_request_that_fails_first_does_not_hold_the_batch():
    batches, process = recorder()
    batcher = Batcher("t", process, max_size=64, max_wait=0.05)
    release = threading.Event()

    def stuck():  # on its way for longer than the window
        with batcher.arriving():
            release.wait(5)

    thread = threading.Thread(target=stuck)
    thread.start()
    while batcher._arriving < 1:
        time.sleep(0.001)
    started = time.perf_counter()
    assert batcher.submit(4) == 40
    assert 0.04 <= time.perf_counter() - started < 2.0
    release.set()
    thread.join(5)
    assert batcher._arriving == 0  # leaving `arriving` without submitting counts too
    started = time.perf_counter()
    assert batcher.submit(5) == 50
    assert time.perf_counter() - started < 0.04


def test_sizes_errors_and_no_batching():
    batches, process = recorder(delay=0.05)
    batcher = Batcher("t", process, max_size=4, max_wait=1.0, size=lambda item: abs(item))
    out, threads = {}, []
    for item in (3, 2, -1):
        def run(item=item):
            try:
                out[item] = batcher.submit(item)
            except ValueError as exc:
                out[item] = str(exc)
        threads.append(threading.Thread(target=run))
    for thread in threads:
        thread.start()
        time.sleep(0.01)
    for thread in threads:
        thread.join(10)
    assert out == {3: 30, 2: 20, -1: "bad item -1"}
    assert all(sum(abs(i) for i in batch) <= 4 for batch in batches)  # never over max_size

    inline, process = recorder()
    one_by_one = Batcher("t", process, max_size=1, max_wait=1.0)
    assert one_by_one.submit(9) == 90 and one_by_one._thread is None  # processed in the caller's thread
    with pytest.raises(ValueError):
        one_by_one.submit(-2)


def test_a_batch_stays_open_while_the_consumer_is_busy():
    batches, process = recorder()
    busy = threading.Event()
    busy.set()
    batcher = Batcher("t", process, max_size=64, max_wait=5.0, busy=busy.is_set)
    results = {}

    def one(item):
        results[item] = batcher.submit(item)

    first = threading.Thread(target=one, args=(1,))
    first.start()
    time.sleep(0.05)
    assert not results  # held: the consumer could not take it yet
    second = threading.Thread(target=one, args=(2,))
    second.start()
    time.sleep(0.05)
    busy.clear()
    first.join(5)
    second.join(5)
    assert results == {1: 10, 2: 20} and batches == [[1, 2]]

    broken = Batcher("t", process, max_size=64, max_wait=5.0, busy=lambda: 1 / 0)
    started = time.perf_counter()
    assert broken.submit(3) == 30 and time.perf_counter() - started < 1.0  # a failing check does not hold
