"""Initial-state seeds for evaluation episodes, kept disjoint from the seeds the training demos were collected with.

Demos are collected with reset seeds seed, seed+1, ... (small numbers); evaluation seeds start at a large fixed
offset, and when the training dataset is known its stored seeds are checked so an overlap is refused, not reported.
"""

from __future__ import annotations

import logging
from pathlib import Path

from ..errors import ConfigError

log = logging.getLogger(__name__)

#: First evaluation seed; demos would need a million episodes to reach it.
EVAL_SEED_OFFSET = 1_000_000
#: Seeds reserved per `eval.seed` value, so evaluations with different eval.seed never share an episode.
SEEDS_PER_EVAL_SEED = 100_000


def evaluation_seeds(eval_seed: int, episodes: int) -> list[int]:
    """Reset seeds of `episodes` evaluation episodes: EVAL_SEED_OFFSET + eval_seed * 100000 + i."""
    if eval_seed < 0:
        raise ConfigError(f"eval.seed must be >= 0, got {eval_seed}")
    if not 0 < episodes <= SEEDS_PER_EVAL_SEED:
        raise ConfigError(f"eval.episodes must be in [1, {SEEDS_PER_EVAL_SEED}], got {episodes}")
    first = EVAL_SEED_OFFSET + eval_seed * SEEDS_PER_EVAL_SEED
    if first + episodes > 2**31 - 1:
        raise ConfigError(f"eval.seed={eval_seed} is too large: seeds must stay below 2**31")
    return list(range(first, first + episodes))


def demo_seeds(dataset: str | Path) -> set[int]:
    """Reset seeds used by a dataset's demos: every stored `seed` attribute, plus the whole range between the
    smallest and largest (collection may have skipped seeds whose expert attempt failed; those states were seen too).
    Empty when the demos store no seeds (e.g. human demos)."""
    from ..data import open_episodes

    with open_episodes(dataset) as ds:
        seeds = set(ds.seeds().values())
    if not seeds:
        log.warning("%s: demos store no reset seeds; cannot check evaluation seeds against them", dataset)
        return set()
    return seeds | set(range(min(seeds), max(seeds) + 1))


def check_disjoint(eval_seeds: list[int], dataset: str | Path) -> None:
    """Raise ConfigError if any evaluation seed was used to collect a demo in `dataset`."""
    used = demo_seeds(dataset)
    overlap = sorted(used.intersection(eval_seeds))
    if overlap:
        raise ConfigError(
            f"evaluation seeds overlap the training demos' seeds in {dataset} (e.g. {overlap[:5]}, "
            f"{len(overlap)} in all): these initial states were seen in training; choose another eval.seed"
        )
