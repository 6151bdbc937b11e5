"""Batches formed from concurrent requests: many request threads, one thread that processes.

A request thread hands its item over and waits for its own result. The
processing thread takes what is waiting (up to `max_size`, as counted by
`size`) and, while other requests are still on their way (inside `arriving`:
being read, checked, preprocessed), waits for them too, at most `max_wait`
seconds. Under load a batch gathers many items for one round of fixed costs;
a lone request never waits.

Used for the queue path (admission: one transaction and one job per batch)
and the in-process v2 path (one network call per batch).
"""
from __future__ import annotations

import collections
import contextlib
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Generic, Iterator, TypeVar

T = TypeVar("T")
BUSY_POLL = 0.002  # seconds between two `busy()` checks while a batch is held open


@dataclass
class Ticket:
    """A request on its way to `submit`."""
    arrived: bool = False


@dataclass
class Slot(Generic[T]):
    item: T
    result: Any = None
    error: BaseException | None = None
    done: threading.Event = field(default_factory=threading.Event)


class Batcher(Generic[T]):
    def __init__(self, name: str, process: Callable[[list[Slot[T]]], None], max_size: int, max_wait: float,
                 size: Callable[[T], int] = lambda item: 1, busy: Callable[[], bool] | None = None):
        """`process(batch)` sets each slot's `result` or `error`; it runs on the batcher's thread
        (in the caller's own thread when `max_size` is 1 or less: no batching). While `busy()`
        says what comes next could not start yet anyway (the workers have a job waiting), the
        batch stays open too, within the same `max_wait`."""
        self.name, self.process = name, process
        self.max_size, self.max_wait, self.size, self.busy = max_size, max_wait, size, busy
        self._inbox: collections.deque[Slot[T]] = collections.deque()
        self._arriving = 0
        self._changed = threading.Condition()
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def arriving(self) -> Iterator[Ticket]:
        """Around a request's work up to `submit(..., ticket)`: a batch being formed waits for it."""
        ticket = Ticket()
        with self._changed:
            self._arriving += 1
        try:
            yield ticket
        finally:
            with self._changed:
                self._arrive(ticket)

    def _arrive(self, ticket: Ticket | None) -> None:
        """(holding the lock)"""
        if ticket is not None and not ticket.arrived:
            ticket.arrived = True
            self._arriving -= 1
            self._changed.notify()

    def submit(self, item: T, ticket: Ticket | None = None, timeout: float | None = None) -> Any:
        """Process `item` with whatever arrives with it; its result, or what processing it raised.
        TimeoutError when it was not processed within `timeout` seconds."""
        slot = Slot(item)
        if self.max_size <= 1:
            with self._changed:
                self._arrive(ticket)
            self._process([slot])
        else:
            with self._changed:
                if self._thread is None or not self._thread.is_alive():
                    self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
                    self._thread.start()
                self._inbox.append(slot)
                self._arrive(ticket)
                self._changed.notify()
            if not slot.done.wait(timeout):
                raise TimeoutError(f"{self.name}: not processed within {timeout} s")
        if slot.error is not None:
            raise slot.error
        return slot.result

    def _next_batch(self) -> list[Slot[T]]:
        with self._changed:
            while not self._inbox:
                self._changed.wait()
            batch = [self._inbox.popleft()]
            size, deadline = self.size(batch[0].item), time.monotonic() + self.max_wait
            while size < self.max_size:
                if self._inbox:
                    if size + self.size(self._inbox[0].item) > self.max_size:
                        break
                    batch.append(self._inbox.popleft())
                    size += self.size(batch[-1].item)
                    continue
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                if self._arriving > 0:
                    self._changed.wait(remaining)
                elif self.busy is not None and self._busy():
                    self._changed.wait(min(remaining, BUSY_POLL))
                else:
                    break
            return batch

    def _busy(self) -> bool:
        try:
            return bool(self.busy())
        except Exception:
            return False

    def _process(self, batch: list[Slot[T]]) -> None:
        try:
            self.process(batch)
        except BaseException as exc:  # never leave a request thread waiting
            for slot in batch:
                if slot.result is None and slot.error is None:
                    slot.error = exc
        finally:
            for slot in batch:
                slot.done.set()

    def _run(self) -> None:
        while True:
            self._process(self._next_batch())
