"""Small tensor lists written as plain rows, and two hand-checked deltas."""

from __future__ import annotations

import torch
from torch import Tensor


def tl(*rows: list[float]) -> list[Tensor]:
    """Tensor list from plain rows (float32, like model parameters)."""
    return [torch.tensor(r, dtype=torch.float32) for r in rows]


def assert_tl(actual: list[Tensor], expected: list[list[float]], tol: float = 1e-6) -> None:
    assert len(actual) == len(expected)
    for a, e in zip(actual, expected, strict=True):
        torch.testing.assert_close(a, torch.tensor(e, dtype=a.dtype), atol=tol, rtol=0)


# Two-tensor deltas used across tests.
# D0 = ([1, 2], [0.5]):   |D0|^2 = 1 + 4 + 0.25 = 5.25
# D1 = ([0.1, 0.2], [0.4]): <D1, D0> = 0.1 + 0.4 + 0.2 = 0.7
D0 = ([1.0, 2.0], [0.5])
D1 = ([0.1, 0.2], [0.4])
