"""Vector operations over tensor lists, against hand-computed values."""

from __future__ import annotations

import pytest
import torch

from fedhyper.rules import clone_list, cosine, inner, sq_norm
from tests.support.tensors import assert_tl, tl


def test_inner_and_norm_small() -> None:
    a, b = tl([1.0, 2.0], [3.0]), tl([4.0, -5.0], [0.5])
    assert inner(a, b) == 1 * 4 - 2 * 5 + 3 * 0.5  # -4.5
    assert sq_norm(a) == pytest.approx(14.0, abs=1e-12)  # 1 + 4 + 9
    assert cosine(a, a) == pytest.approx(1.0, abs=1e-12)
    assert cosine(a, tl([0.0, 0.0], [0.0])) == 0.0  # zero vector: no direction
    assert inner([], []) == 0.0
    with pytest.raises(ValueError, match="length"):
        inner(a, a[:1])


def test_inner_accumulates_in_float64() -> None:
    # 1e8 followed by 1000 ones: the exact sum is 100_001_000. Float32 spacing at 1e8 is 8,
    # so a float32 accumulation cannot represent it (torch's float32 sum gives 100001008).
    big = [torch.tensor([1e8] + [1.0] * 1000, dtype=torch.float32)]
    ones = [torch.ones(1001, dtype=torch.float32)]
    assert big[0].sum().item() != 100_001_000.0  # the failure mode being guarded against
    assert inner(big, ones) == 100_001_000.0
    # Across tensors as well: 1e8 in one tensor, 1000 ones in another.
    split = [torch.tensor([1e8]), torch.ones(1000)]
    assert inner(split, [torch.ones(1), torch.ones(1000)]) == 100_001_000.0
    # Squared norm: 1e4^2 + 1000 * 1 = 100_001_000.
    assert sq_norm([torch.tensor([1e4] + [1.0] * 1000)]) == 100_001_000.0


def test_clone_list_is_detached() -> None:
    t = tl([2.0, -1.0])
    c = clone_list(t)
    c[0].add_(1.0)
    assert_tl(t, [[2.0, -1.0]])  # clone shares no storage
