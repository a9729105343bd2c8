r"""HDET's fan-out: the spread of multipliers over the replicas and its per-round permutation.

Replica (or client) :math:`r` of :math:`M` trains with :math:`\bar\eta\,\rho_{\pi(r)}`,
where :math:`\rho` is a fixed, symmetric spread around 1 and :math:`\pi` a fresh
permutation every round. With the position
:math:`u_r = (r - \tfrac{M-1}{2}) / \max(\tfrac{M-1}{2}, \tfrac12) \in [-1, 1]`
(:math:`\sum_r u_r = 0`) and the width :math:`a \ge 0`:

* ``"linear"`` (the paper): :math:`\rho_r = 1 + a\,u_r`, so :math:`\sum_r \rho_r = M`
  (arithmetic mean 1) and :math:`\rho \in [1 - a, 1 + a]`; :math:`a < 1` keeps every
  multiplier positive;
* ``"log"`` (for wide sweeps): :math:`\rho_r = (1 + a)^{u_r}`, so
  :math:`\log\rho` is symmetric around 0, :math:`\prod_r \rho_r = 1` (geometric mean 1)
  and :math:`\rho \in [1/(1+a), 1 + a]`; any :math:`a \ge 0` is allowed (``a = 9``
  sweeps from a tenth to ten times the base value).

Both kinds give the same top multiplier :math:`1 + a`, and ``a = 0`` gives all ones.
"""

from __future__ import annotations

import hashlib
import math
from typing import Literal, get_args

__all__ = [
    "SPREAD_KINDS",
    "SpreadKind",
    "assigned_multipliers",
    "check_width",
    "replica_permutation",
    "spread_multipliers",
]

SpreadKind = Literal["linear", "log"]
SPREAD_KINDS: tuple[str, ...] = get_args(SpreadKind)


def check_width(width: float, kind: str) -> float:
    """Validate the spread width ``a`` for ``kind`` and return it as a float.

    Raises
    ------
    ValueError
        If ``kind`` is unknown, or ``width`` is not finite, negative, or (linear spread)
        1 or more, which would give a replica a multiplier of zero or less.

    """
    if kind not in SPREAD_KINDS:
        raise ValueError(f"spread kind must be one of {SPREAD_KINDS}, got {kind!r}")
    width = float(width)
    if not math.isfinite(width) or width < 0.0:
        raise ValueError(f"spread width must be finite and >= 0, got {width}")
    if kind == "linear" and width >= 1.0:
        raise ValueError(
            f"linear spread width must be < 1 (multipliers 1 +- width > 0), got {width}"
        )
    return width


def _positions(num_replicas: int) -> list[float]:
    """Return :math:`u_r` for ``r = 0 .. M-1``, evenly spaced in ``[-1, 1]`` (``[0]`` for M = 1)."""
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")
    centre = (num_replicas - 1) / 2.0
    half_range = max(centre, 0.5)
    return [(r - centre) / half_range for r in range(num_replicas)]


def spread_multipliers(num_replicas: int, width: float, kind: str = "linear") -> list[float]:
    r"""Return the multipliers :math:`\rho_0 < \dots < \rho_{M-1}` (all ones when ``width`` is 0).

    Parameters
    ----------
    num_replicas
        :math:`M`, the number of replicas (clients) of the round.
    width
        :math:`a`, see the module docstring.
    kind
        ``"linear"`` or ``"log"``.

    """
    width = check_width(width, kind)
    if kind == "linear":
        return [1.0 + width * u for u in _positions(num_replicas)]
    return [(1.0 + width) ** u for u in _positions(num_replicas)]


def replica_permutation(num_replicas: int, seed: int, round_index: int, name: str) -> list[int]:
    r"""Return :math:`\pi`: replica ``i`` gets spread level ``π[i]``.

    A pure function of its arguments, identical on every machine and Python run (it does
    not use Python's salted ``hash`` nor a library's random stream): the levels are sorted
    by a BLAKE2b digest of ``(seed, round_index, name, level)``. Different names give
    independent permutations, so hyperparameters spread together are not correlated
    across replicas.

    Parameters
    ----------
    num_replicas
        :math:`M`.
    seed
        Run seed.
    round_index
        Round (or averaging period) the permutation is for.
    name
        Name of the hyperparameter (``"lr"``, ``"weight_decay"``, ...).

    """
    if num_replicas < 1:
        raise ValueError(f"num_replicas must be >= 1, got {num_replicas}")

    def key(level: int) -> bytes:
        text = f"{seed}\x1f{round_index}\x1f{name}\x1f{level}"
        return hashlib.blake2b(text.encode(), digest_size=16).digest()

    return sorted(range(num_replicas), key=key)


def assigned_multipliers(
    num_replicas: int, width: float, kind: str, seed: int, round_index: int, name: str
) -> list[float]:
    r"""Return :math:`\rho_{\pi(i)}` for replicas ``i = 0 .. M-1`` in round ``round_index``."""
    levels = spread_multipliers(num_replicas, width, kind)
    return [levels[j] for j in replica_permutation(num_replicas, seed, round_index, name)]
