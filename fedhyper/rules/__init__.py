"""Pure learning-rate rules of FedHyper and its baselines, over lists of torch tensors.

Server rules (:class:`ServerRule`) map the aggregated update to a model step and, for
SL/Decay-SL and Auto, to the clients' next learning rate. The client rules adapt the
local learning rate after every optimiser step (:class:`HypergradientLocalLR`) or measure
it (:class:`DescentCosine`).
No Flower imports: the strategies and clients wire these in.
"""

from fedhyper.rules.auto import LOCAL_SIGNALS, AutoLR
from fedhyper.rules.base import ServerRule, ServerStep, apply_rule
from fedhyper.rules.client_lr import HypergradientLocalLR
from fedhyper.rules.decay import DecayGlobal, DecayLocal
from fedhyper.rules.descent_cosine import DescentCosine
from fedhyper.rules.fedexp import FedExP
from fedhyper.rules.global_lr import GlobalLR, UniversalGlobalLR
from fedhyper.rules.hypergradient import hypergradient_signal
from fedhyper.rules.momentum import GlobalMomentumLR, accumulator_for_global_lr
from fedhyper.rules.plain import Plain
from fedhyper.rules.server_local_lr import ServerLocalLR
from fedhyper.rules.vector import (
    clone_list,
    cosine,
    inner,
    scaled,
    sq_norm,
    sum_float64,
    zeros_like_list,
)

__all__ = [
    "LOCAL_SIGNALS",
    "AutoLR",
    "DecayGlobal",
    "DecayLocal",
    "DescentCosine",
    "FedExP",
    "GlobalLR",
    "GlobalMomentumLR",
    "HypergradientLocalLR",
    "Plain",
    "ServerLocalLR",
    "ServerRule",
    "ServerStep",
    "UniversalGlobalLR",
    "accumulator_for_global_lr",
    "apply_rule",
    "clone_list",
    "cosine",
    "hypergradient_signal",
    "inner",
    "scaled",
    "sq_norm",
    "sum_float64",
    "zeros_like_list",
]
