"""Bilevel learning of many regularisation weights: MAID and its problems.

The maths here is free of Flower: pure functions and small classes over ``float64``
tensors, so that a federated adapter can reuse them unchanged.

- :mod:`fedhyper.bilevel.problem`: what MAID asks of a bilevel problem.
- :mod:`fedhyper.bilevel.solvers`: lower-level solvers with a certified stopping test,
  and conjugate gradients.
- :mod:`fedhyper.bilevel.maid`: the outer loop (MAID and fixed-accuracy schedules).
- :mod:`fedhyper.bilevel.logistic`: multinomial logistic regression with one L2 weight
  per parameter, over client shards.
- :mod:`fedhyper.bilevel.fashion12`: the 12x12 Fashion-MNIST task.
- :mod:`fedhyper.bilevel.config`: the settings of a federated run
  (``python -m fedhyper.bilevel``; the Flower side is :mod:`strategies.fedmaid`).
"""

from fedhyper.bilevel.logistic import LabelledData, LogisticL2Problem
from fedhyper.bilevel.maid import MAID, MAIDConfig, StepRecord
from fedhyper.bilevel.problem import BilevelProblem, LowerSolution

__all__ = [
    "MAID",
    "BilevelProblem",
    "LabelledData",
    "LogisticL2Problem",
    "LowerSolution",
    "MAIDConfig",
    "StepRecord",
]
