"""A genetic algorithm over hyper-parameters: pure Python, seeded, with the fitness function injected.

An individual is a dict of hyper-parameters (the genes of a `Space`). Each generation keeps the best
`elitism` individuals unchanged and fills the rest with children: two parents picked by tournament,
uniform crossover, then mutation. Every random choice comes from one `random.Random(seed)`, and an
individual already evaluated is never evaluated again, so a run with the same seed and a deterministic
fitness visits the same individuals and finds the same best. Nothing here imports TensorFlow.
"""
from __future__ import annotations

import json
import math
import random
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

Individual = dict[str, Any]
Fitness = Callable[[Individual], float]


@dataclass(frozen=True)
class Gene:
    """One hyper-parameter and the values it may take.

    kind "log": a float in [low, high], sampled and mutated on a log scale (learning rates);
    "float": a float in [low, high]; "choice": one of `values`; "layers": a list of `values`
    (layer sizes), `min_len` to `max_len` long.
    """

    name: str
    kind: str
    low: float = 0.0
    high: float = 0.0
    values: tuple = ()
    min_len: int = 1
    max_len: int = 1

    def __post_init__(self):
        if self.kind not in ("log", "float", "choice", "layers"):
            raise ValueError(f"gene {self.name!r}: unknown kind {self.kind!r}")
        if self.kind in ("log", "float") and not (self.low < self.high and (self.kind == "float" or self.low > 0)):
            raise ValueError(f"gene {self.name!r}: needs low < high (and low > 0 on a log scale)")
        if self.kind in ("choice", "layers") and not self.values:
            raise ValueError(f"gene {self.name!r}: needs values")
        if self.kind == "layers" and not 1 <= self.min_len <= self.max_len:
            raise ValueError(f"gene {self.name!r}: needs 1 <= min_len <= max_len")

    def sample(self, rng: random.Random):
        if self.kind == "log":
            return _round(math.exp(rng.uniform(math.log(self.low), math.log(self.high))))
        if self.kind == "float":
            return round(rng.uniform(self.low, self.high), 3)
        if self.kind == "choice":
            return rng.choice(self.values)
        return [rng.choice(self.values) for _ in range(rng.randint(self.min_len, self.max_len))]

    def mutate(self, value, rng: random.Random):
        """A nearby value: a step on the (log) scale, a neighbouring choice, one layer changed, added or dropped."""
        if self.kind == "log":
            return _round(min(self.high, max(self.low, value * math.exp(rng.gauss(0.0, 0.5)))))
        if self.kind == "float":
            return round(min(self.high, max(self.low, value + rng.gauss(0.0, 0.15 * (self.high - self.low)))), 3)
        if self.kind == "choice":
            i = self.values.index(value) if value in self.values else 0
            return self.values[min(len(self.values) - 1, max(0, i + rng.choice((-1, 1))))]
        layers = list(value)
        moves = ["resize"]
        if len(layers) < self.max_len:
            moves.append("add")
        if len(layers) > self.min_len:
            moves.append("drop")
        move = rng.choice(moves)
        if move == "add":
            layers.insert(rng.randint(0, len(layers)), rng.choice(self.values))
        elif move == "drop":
            layers.pop(rng.randrange(len(layers)))
        else:
            layers[rng.randrange(len(layers))] = rng.choice(self.values)
        return layers

    def describe(self) -> dict:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind}
        if self.kind in ("log", "float"):
            out.update(low=self.low, high=self.high)
        else:
            out["values"] = list(self.values)
        if self.kind == "layers":
            out.update(min_len=self.min_len, max_len=self.max_len)
        return out


def _round(x: float) -> float:
    return float(f"{x:.3g}")


Space = Sequence[Gene]


def key(individual: Mapping[str, Any]) -> str:
    return json.dumps(individual, sort_keys=True)


def random_individual(space: Space, rng: random.Random) -> Individual:
    return {gene.name: gene.sample(rng) for gene in space}


def crossover(a: Individual, b: Individual, space: Space, rng: random.Random) -> Individual:
    """Uniform crossover: each gene from one parent or the other."""
    return {gene.name: list(p) if isinstance(p := (a if rng.random() < 0.5 else b)[gene.name], list) else p
            for gene in space}


def mutate(individual: Individual, space: Space, rng: random.Random, rate: float) -> Individual:
    """Each gene mutates with probability `rate`."""
    return {gene.name: gene.mutate(individual[gene.name], rng) if rng.random() < rate else individual[gene.name]
            for gene in space}


def tournament(fitnesses: Sequence[float], size: int, rng: random.Random) -> int:
    """The index of the fittest of `size` individuals drawn at random (the earlier one on a tie)."""
    drawn = sorted(rng.sample(range(len(fitnesses)), min(size, len(fitnesses))))
    return max(drawn, key=lambda i: (fitnesses[i], -i))


def ranked(population: Sequence[Individual], fitnesses: Sequence[float]) -> list[int]:
    """Indices best first; ties keep the population order."""
    return sorted(range(len(population)), key=lambda i: (-fitnesses[i], i))


@dataclass
class SearchResult:
    best: Individual
    best_fitness: float
    history: list[dict] = field(default_factory=list)  # per generation: best, mean, individuals
    evaluations: int = 0


def evolve(space: Space, fitness: Fitness, *, population: int, generations: int, seed: int,
           elitism: int = 1, tournament_size: int = 2, crossover_rate: float = 0.9, mutation_rate: float = 0.3,
           initial: Sequence[Individual] = (), on_generation: Callable[[dict], None] | None = None) -> SearchResult:
    """Evolve `population` individuals for `generations` generations; the fittest ever seen wins.

    `initial` individuals (such as the family's defaults) start the first generation; random ones fill it.
    """
    if population < 2:
        raise ValueError("population must be at least 2")
    if generations < 1:
        raise ValueError("generations must be at least 1")
    if not 0 <= elitism < population:
        raise ValueError("elitism must be at least 0 and less than the population")
    rng = random.Random(seed)
    cache: dict[str, float] = {}
    members = [dict(ind) for ind in initial][:population]
    while len(members) < population:
        members.append(random_individual(space, rng))
    result = SearchResult(best={}, best_fitness=-math.inf)
    for generation in range(1, generations + 1):
        scores = []
        for individual in members:
            k = key(individual)
            if k not in cache:
                cache[k] = float(fitness(individual))
                result.evaluations += 1
            scores.append(cache[k])
        order = ranked(members, scores)
        if scores[order[0]] > result.best_fitness:
            result.best, result.best_fitness = dict(members[order[0]]), scores[order[0]]
        entry = {"generation": generation, "best": scores[order[0]], "mean": sum(scores) / len(scores),
                 "individuals": [{"hyperparameters": members[i], "fitness": scores[i]} for i in order]}
        result.history.append(entry)
        if on_generation is not None:
            on_generation(entry)
        if generation == generations:
            break
        children = [dict(members[i]) for i in order[:elitism]]
        while len(children) < population:
            a = members[tournament(scores, tournament_size, rng)]
            b = members[tournament(scores, tournament_size, rng)]
            child = crossover(a, b, space, rng) if rng.random() < crossover_rate else dict(a)
            children.append(mutate(child, space, rng, mutation_rate))
        members = children
    return result


LAYER_SIZES = (32, 64, 128, 256, 512, 1024)
FILTERS = (8, 16, 32, 64, 128)
BATCH_SIZES = (32, 64, 128, 256)


def space_for(family_name: str, defaults: Mapping[str, Any] | None = None) -> list[Gene]:
    """The genes for a family, read from its registered defaults (`models.families`): the learning rate
    around its default, the batch size, and whichever of dropout, hidden layer sizes, convolution
    filters and dense width the family has."""
    if defaults is None:
        from models import families

        defaults = families.get(family_name).defaults
    lr = float(defaults["learning_rate"])
    genes = [Gene("learning_rate", "log", low=lr / 10, high=min(lr * 10, 0.1)),
             Gene("batch_size", "choice", values=BATCH_SIZES)]
    if "dropout" in defaults:
        genes.append(Gene("dropout", "float", low=0.0, high=0.5))
    if isinstance(defaults.get("hidden"), (list, tuple)):
        genes.append(Gene("hidden", "layers", values=LAYER_SIZES, min_len=1, max_len=max(3, len(defaults["hidden"]))))
    if isinstance(defaults.get("filters"), (list, tuple)):
        n = len(defaults["filters"])
        genes.append(Gene("filters", "layers", values=FILTERS, min_len=n, max_len=n))
    if isinstance(defaults.get("dense"), int):
        genes.append(Gene("dense", "choice", values=(64, 128, 256, 512)))
    return genes
