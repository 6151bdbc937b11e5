"""The genetic search engine (trainers.genetic): pure Python, no TensorFlow, a fitness injected."""
import random

import pytest

from trainers import genetic
from trainers.genetic import Gene

SPACE = [
    Gene("learning_rate", "log", low=1e-4, high=1e-2),
    Gene("batch_size", "choice", values=(32, 64, 128, 256)),
    Gene("dropout", "float", low=0.0, high=0.5),
    Gene("hidden", "layers", values=(32, 64, 128, 256), min_len=1, max_len=3),
]


def peak(individual) -> float:
    """A smooth made-up fitness, best at lr 1e-3, batch 64, dropout 0.2, hidden [128, 128]."""
    import math

    return -(abs(math.log10(individual["learning_rate"]) + 3)
             + abs(SPACE[1].values.index(individual["batch_size"]) - 1) * 0.5
             + abs(individual["dropout"] - 0.2)
             + abs(len(individual["hidden"]) - 2) * 0.5 + sum(abs(h - 128) for h in individual["hidden"]) / 512)


def valid(individual) -> bool:
    return (1e-4 <= individual["learning_rate"] <= 1e-2 and individual["batch_size"] in SPACE[1].values
            and 0.0 <= individual["dropout"] <= 0.5 and 1 <= len(individual["hidden"]) <= 3
            and all(h in SPACE[3].values for h in individual["hidden"]))


def test_samples_and_mutations_stay_in_the_space():
    rng = random.Random(1)
    for _ in range(300):
        individual = genetic.random_individual(SPACE, rng)
        assert valid(individual), individual
        assert valid(genetic.mutate(individual, SPACE, rng, rate=1.0))


def test_mutation_changes_genes_and_rate_zero_changes_nothing():
    rng = random.Random(2)
    individual = genetic.random_individual(SPACE, rng)
    assert genetic.mutate(individual, SPACE, rng, rate=0.0) == individual
    changed = [genetic.mutate(individual, SPACE, rng, rate=1.0) for _ in range(20)]
    assert any(c["learning_rate"] != individual["learning_rate"] for c in changed)
    assert any(c["hidden"] != individual["hidden"] for c in changed)


def test_crossover_takes_every_gene_from_a_parent():
    rng = random.Random(3)
    a, b = genetic.random_individual(SPACE, rng), genetic.random_individual(SPACE, rng)
    children = [genetic.crossover(a, b, SPACE, rng) for _ in range(50)]
    for child in children:
        assert all(child[g.name] in (a[g.name], b[g.name]) for g in SPACE)
    assert any(child != a and child != b for child in children)  # genes from both parents
    assert all(child["hidden"] is not a["hidden"] and child["hidden"] is not b["hidden"] for child in children)


def test_tournament_prefers_the_fitter():
    rng = random.Random(4)
    fitnesses = [0.1, 0.9, 0.5, 0.3]
    assert genetic.tournament(fitnesses, size=4, rng=rng) == 1
    wins = [genetic.tournament(fitnesses, size=2, rng=rng) for _ in range(400)]
    assert wins.count(1) > wins.count(2) > wins.count(3) > wins.count(0)
    assert genetic.tournament([0.5, 0.5], size=2, rng=rng) == 0  # a tie: the earlier one


def test_same_seed_same_search_and_elitism_never_loses_the_best():
    runs = [genetic.evolve(SPACE, peak, population=8, generations=6, seed=seed) for seed in (7, 7, 8)]
    a, b, c = runs
    assert a.history == b.history and a.best == b.best
    assert a.history != c.history
    bests = [h["best"] for h in a.history]
    assert bests == sorted(bests)  # elitism: the best of a generation survives into the next
    assert a.best_fitness == max(bests) == peak(a.best)
    for entry in a.history:
        fits = [i["fitness"] for i in entry["individuals"]]
        assert len(fits) == 8 and entry["best"] == max(fits)
        assert entry["mean"] == pytest.approx(sum(fits) / 8)


def test_evolution_beats_the_first_generation_and_caches_evaluations():
    calls = []

    def counted(individual):
        calls.append(genetic.key(individual))
        return peak(individual)

    result = genetic.evolve(SPACE, counted, population=10, generations=8, seed=0)
    assert result.history[-1]["best"] > result.history[0]["best"]
    assert len(calls) == len(set(calls)) == result.evaluations  # an individual is never trained twice
    assert result.evaluations < 10 * 8


def test_initial_individuals_start_the_search():
    start = {"learning_rate": 1e-3, "batch_size": 64, "dropout": 0.2, "hidden": [128, 128]}
    result = genetic.evolve(SPACE, peak, population=4, generations=2, seed=1, initial=[start])
    assert start in [i["hyperparameters"] for i in result.history[0]["individuals"]]
    assert result.best == start  # the optimum of `peak` cannot be beaten


def test_bad_settings_are_refused():
    with pytest.raises(ValueError, match="population"):
        genetic.evolve(SPACE, peak, population=1, generations=1, seed=0)
    with pytest.raises(ValueError, match="generations"):
        genetic.evolve(SPACE, peak, population=4, generations=0, seed=0)
    with pytest.raises(ValueError, match="elitism"):
        genetic.evolve(SPACE, peak, population=4, generations=1, seed=0, elitism=4)
    with pytest.raises(ValueError, match="low < high"):
        Gene("lr", "log", low=0.0, high=1.0)


def test_space_follows_the_family_registry():
    mlp = {g.name: g for g in genetic.space_for("mlp")}
    assert set(mlp) == {"learning_rate", "batch_size", "dropout", "hidden"}
    assert mlp["learning_rate"].low < 1e-3 < mlp["learning_rate"].high  # around the family's default
    cnn = {g.name: g for g in genetic.space_for("cnn")}
    assert {"filters", "dense", "dropout"} <= set(cnn) and cnn["filters"].min_len == cnn["filters"].max_len == 2
    assert set(g.name for g in genetic.space_for("softmax")) == {"learning_rate", "batch_size"}


def test_the_engine_does_not_import_tensorflow():
    import subprocess
    import sys

    code = "import sys, trainers.genetic; trainers.genetic.space_for('cnn'); print('tensorflow' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
