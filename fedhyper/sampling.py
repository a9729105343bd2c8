"""Which clients take part in a round: a pure function of the seed and the round.

Flower samples clients with ``random.sample`` over node ids, and a simulation draws new
random node ids every time it starts, so the same seed picks different clients in a run
and in its resumption. Here the server samples *positions* in a stable client order
(by partition id) with a generator seeded by ``(seed, purpose, round, attempt)``: the
same clients in every run, whenever it was interrupted.
"""

from __future__ import annotations

import enum

import numpy as np

__all__ = ["Purpose", "sample_clients"]


class Purpose(enum.IntEnum):
    """What the sampled clients do; each purpose has its own random stream."""

    TRAIN = 0
    EVALUATE = 1


def sample_clients(
    seed: int, server_round: int, attempt: int, purpose: Purpose, population: int, count: int
) -> list[int]:
    """Return ``count`` distinct client positions in ``range(population)``, sorted.

    Parameters
    ----------
    seed : int
        The experiment's seed.
    server_round : int
        The round, from 1.
    attempt : int
        0 for the round's first try; a retry samples afresh.
    purpose : Purpose
        Training or evaluation.
    population : int
        Number of clients.
    count : int
        Clients to sample, ``0 <= count <= population``.

    Returns
    -------
    list of int
        Positions in the stable client order.

    """
    rng = np.random.default_rng([seed, int(purpose), server_round, attempt])
    return sorted(int(i) for i in rng.choice(population, size=count, replace=False))
