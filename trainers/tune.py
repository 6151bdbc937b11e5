"""`digitserve tune`: a genetic search over a family's hyper-parameters, its best registered as a candidate.

Fitness is the best validation accuracy of a short training run (the validation split is held out of
the training slice, `trainers.train`); the test set is never looked at during the search. The best
individual is then trained again with the same seed (runs are deterministic) and registered with its
test figures and the search's generations, not activated.
"""
from __future__ import annotations

from core.settings import Settings
from models import families
from models.registry import ModelRegistry, VersionInfo
from trainers import genetic
from trainers.mnist import load_mnist
from trainers.progress import OnEpoch
from trainers.register import train_and_register


def tune(settings: Settings, registry: ModelRegistry, name: str, *, family: str, population: int = 8,
         generations: int = 5, seed: int = 0, epochs: int | None = None, limit: int | None = None,
         elitism: int = 1, progress: bool = True, on_epoch: OnEpoch | None = None,
         on_generation=None) -> VersionInfo:
    from trainers.train import train

    spec = families.get(family)
    space = genetic.space_for(family, spec.defaults)
    data = load_mnist(settings.mnist_dir, mirrors=settings.mnist_mirrors, progress=progress)
    evaluated = 0

    def fitness(individual: dict) -> float:
        nonlocal evaluated
        evaluated += 1
        number = evaluated

        def report(entry: dict) -> bool:
            return bool(on_epoch({**entry, "stage": "search", "evaluation": number})) if on_epoch else False

        result = train(family, data, epochs=epochs, limit=limit, seed=seed, progress=False, overrides=individual,
                       threads=settings.training_threads(), on_epoch=report, evaluate_test=False)
        value = float(result.metrics["validation_accuracy"] or 0.0)
        if progress:
            print(f"{family} individual {number}: validation accuracy {value:.4f} {individual}", flush=True)
        return value

    def generation_done(entry: dict) -> None:
        if progress:
            print(f"generation {entry['generation']}/{generations}: best {entry['best']:.4f}, "
                  f"mean {entry['mean']:.4f}", flush=True)
        if on_generation is not None:
            on_generation(entry)

    defaults = {gene.name: spec.defaults[gene.name] for gene in space}
    found = genetic.evolve(space, fitness, population=population, generations=generations, seed=seed,
                           elitism=elitism, initial=[defaults], on_generation=generation_done)
    search = {"family": family, "population": population, "generations": generations, "seed": seed,
              "elitism": elitism, "epochs": epochs, "limit": limit, "fitness": "validation_accuracy",
              "space": [gene.describe() for gene in space], "evaluations": found.evaluations,
              "best": found.best, "best_fitness": found.best_fitness,
              "history": [{"generation": h["generation"], "best": h["best"], "mean": h["mean"],
                           "individuals": h["individuals"]} for h in found.history]}

    def final(entry: dict) -> bool:
        return bool(on_epoch({**entry, "stage": "final"})) if on_epoch else False

    return train_and_register(settings, registry, family, name=name, epochs=epochs, limit=limit, seed=seed,
                              activate=False, progress=progress, overrides=found.best, on_epoch=final, search=search)
