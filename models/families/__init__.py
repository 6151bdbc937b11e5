"""Network families: one record per family, one module per family.

A family is a :class:`Family` record, the ``FAMILY`` attribute of a module of
this package (``softmax.py``, ``mlp.py``, ...). The modules are discovered with
``pkgutil`` the first time a family is looked up, so adding a family is adding
a module: the CLI (``digitserve train``), the trainer (``trainers.train``) and
the benchmarks find it through :func:`get` / :func:`names`. Modules whose name
starts with an underscore (``_common``, ``_layers``) hold shared code and are
not families.

Every network takes float32 images of shape (N, 28, 28) in [0, 1] (white digit
on black, MNIST convention) and returns softmax probabilities of shape (N, 10).
Any reshape / flatten / augmentation lives inside the model, and only plain
Keras layers are used, so ``keras.models.load_model(path)`` needs no custom
objects. ``build`` returns an *uncompiled* model: ``trainers.train`` compiles
it (loss, optimizer, learning-rate schedule come from the same hyper-parameter
dict).

Importing this package (and looking families up, reading their defaults and
descriptions) does not import Keras or TensorFlow: the family modules import
them inside ``build`` / ``pretrain``, so ``digitserve --help`` stays fast.

This package imports nothing of the platform.
"""
from __future__ import annotations

import copy
import functools
import importlib
import pkgutil
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, Mapping

if TYPE_CHECKING:  # pragma: no cover
    import keras
    import numpy as np

# (W, b_hidden) pairs, or whatever a family's ``pretrain`` hands its ``build``.
Pretrained = Any
# on_epoch(progress_line): called by ``pretrain`` after each pretraining epoch.
ProgressLine = Callable[[str], None]


@dataclass(frozen=True)
class Family:
    """One network family.

    ``name``: the CLI / registry name (equal to the module's name).
    ``description``: one line for ``digitserve train --help`` and the docs.
    ``defaults``: every hyper-parameter (the common training ones from
    ``_common.COMMON`` included), read-only; :meth:`hyperparameters` copies it.
    ``build(hp, seed, pretrained=None)``: an uncompiled ``keras.Model`` for a
    complete ``hp`` (from :meth:`hyperparameters`).
    ``describe(hp)``: a plain-language description of a complete ``hp`` (stored
    as the ``architecture`` of a trained version).
    ``pretrain(x_train_flat, hp, seed, on_epoch)``: optional unsupervised
    pretraining on (N, 784) float32 images in [0, 1]; returns ``(pretrained,
    curves)``: what ``build`` takes as ``pretrained`` and extra per-epoch curves
    stored with the version. ``on_epoch`` (or None) receives a progress line.
    ``order``: sort key of :func:`names` (then the name).
    """

    name: str
    description: str
    defaults: Mapping[str, Any]
    build: Callable[..., "keras.Model"]
    describe: Callable[[dict], str]
    pretrain: Callable[["np.ndarray", dict, int, ProgressLine | None], tuple[Pretrained, dict]] | None = None
    order: int = 100

    def __post_init__(self) -> None:
        if not self.name or not self.name.isidentifier():
            raise ValueError(f"family name {self.name!r} must be a Python identifier")
        if "\n" in self.description or not self.description.strip():
            raise ValueError(f"family {self.name!r}: the description must be one non-empty line")
        if not callable(self.build) or not callable(self.describe) or not (
                self.pretrain is None or callable(self.pretrain)):
            raise TypeError(f"family {self.name!r}: build, describe (and pretrain) must be functions")
        for key in ("epochs", "batch_size", "learning_rate"):
            if key not in self.defaults:
                raise ValueError(f"family {self.name!r}: defaults lack {key!r} (start from _common.COMMON)")
        object.__setattr__(self, "defaults", MappingProxyType(dict(self.defaults)))

    def hyperparameters(self, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """The defaults updated with ``overrides`` (a deep copy: nothing leaks back)."""
        hp = {key: copy.deepcopy(value) for key, value in self.defaults.items()}
        for key, value in (overrides or {}).items():
            hp[key] = copy.deepcopy(value)
        return hp


def discover(package_name: str, package_path) -> dict[str, Family]:
    """The ``FAMILY`` records of the public modules on ``package_path`` (a
    package's ``__path__``), sorted by ``(order, name)``. A public module without
    a ``FAMILY``, a ``FAMILY`` named differently from its module, or a name used
    twice is an error: a family never goes missing silently."""
    found: list[Family] = []
    for info in pkgutil.iter_modules(package_path):
        if info.name.startswith("_"):
            continue
        module = importlib.import_module(f"{package_name}.{info.name}")
        family = getattr(module, "FAMILY", None)
        if not isinstance(family, Family):
            raise TypeError(f"{module.__name__} defines no FAMILY = Family(...)")
        if family.name != info.name:
            raise ValueError(f"{module.__name__} defines the family {family.name!r}; name it {info.name}.py")
        found.append(family)
    found.sort(key=lambda f: (f.order, f.name))
    families: dict[str, Family] = {}
    for family in found:
        if family.name in families:  # two directories of the package path with the same module
            raise ValueError(f"two modules define the family {family.name!r}")
        families[family.name] = family
    return families


@functools.cache
def _registry() -> Mapping[str, Family]:
    return MappingProxyType(discover(__name__, __path__))


def reload() -> None:
    """Forget the discovered families (the next lookup scans the package again)."""
    _registry.cache_clear()


def names() -> tuple[str, ...]:
    """The family names, in help-text order (softmax, mlp, cnn, dbn, then any new ones)."""
    return tuple(_registry())


def all_families() -> tuple[Family, ...]:
    return tuple(_registry().values())


def get(name: str) -> Family:
    """The family called ``name``; ``ValueError`` naming the known ones otherwise."""
    try:
        return _registry()[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown family {name!r}; expected one of {names()}") from None


def hyperparameters(name: str, overrides: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The defaults of family ``name`` updated with ``overrides`` (a deep copy)."""
    return get(name).hyperparameters(overrides)
