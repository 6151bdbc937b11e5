"""Generated digits: a PNG grid of what a conditional-GAN version (family cgan) draws per class."""
from __future__ import annotations

import threading
from collections import OrderedDict

from core.errors import InvalidInput
from models.registry import ModelNotFound
from server.services.bootstrap import Services

MAX_PER_CLASS = 16
MAX_SEED = 2**31 - 1


def _bounded_int(raw, name: str, default: int, low: int, high: int) -> int:
    if raw in (None, ""):
        return default
    try:
        value = int(raw)
    except (TypeError, ValueError):
        raise InvalidInput(f"{name} must be an integer between {low} and {high}") from None
    if not low <= value <= high:
        raise InvalidInput(f"{name} must be between {low} and {high}")
    return value


class Samples:
    """Loads generator versions on first use (TensorFlow with them) and keeps the last few."""

    def __init__(self, services: Services, capacity: int = 2):
        self.services, self.capacity = services, capacity
        self._generators: OrderedDict[int, object] = OrderedDict()
        self._lock = threading.Lock()

    def _generator(self, info):
        import keras

        from models.runtime import configure_tensorflow

        configure_tensorflow(self.services.settings.serving_threads())
        loaded = self._generators.get(info.id)
        if loaded is None:
            loaded = keras.models.load_model(self.services.registry.fetch_file(info), compile=False)
            self._generators[info.id] = loaded
            while len(self._generators) > self.capacity:
                self._generators.popitem(last=False)
        self._generators.move_to_end(info.id)
        return loaded

    def grid_png(self, name: str, version: str, per_class=None, seed=None) -> bytes:
        """One row per digit 0-9, ``per_class`` (1-16, default 8) generated digits each;
        ``version`` is a number or ``active``. The same seed draws the same grid."""
        per_class = _bounded_int(per_class, "per_class", 8, 1, MAX_PER_CLASS)
        seed = _bounded_int(seed, "seed", 0, 0, MAX_SEED)
        if version != "active" and not version.isdigit():
            raise ModelNotFound(f"model {name!r} has no version {version}")
        info = self.services.registry.get(name, "active" if version == "active" else int(version), kind="generator")
        from models import gan

        with self._lock:  # one TensorFlow call at a time per process: the grids are small
            return gan.grid_png(self._generator(info), per_class, seed)
