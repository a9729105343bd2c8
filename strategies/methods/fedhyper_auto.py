"""FedHyper-Auto: scale-free hypergradients of the global and the clients' learning rate."""

from __future__ import annotations

from dataclasses import dataclass

from clients.rules.descent_cosine import NAME as DESCENT_COSINE
from fedhyper.checks import at_least, in_range, one_of, within_own_bounds
from fedhyper.config import ExperimentConfig, StrategyConfig
from fedhyper.errors import ConfigError
from fedhyper.methods import Method, register_method
from fedhyper.rules.auto import GLOBAL_SIGNALS, LIFTING_SIGNALS, LOCAL_SIGNALS, AutoLR
from fedhyper.training import ADAPTIVE_OPTIMIZERS
from strategies.factory import rule_strategy

LOCAL_SIGNAL_CHOICES = ("auto", *LOCAL_SIGNALS)
"""``strategy.local_signal``: :data:`~fedhyper.rules.auto.LOCAL_SIGNALS`, or ``auto``."""


@dataclass
class AutoParams(StrategyConfig):
    """FedHyper-Auto's settings; each ingredient has an off switch (0 or ``false``).

    Attributes
    ----------
    hyper_lr : float
        β_g, the log-step of the global LR per unit of its cosine signal.
    global_signal : str
        What the global LR follows: ``server`` (the cosine of this round's update with
        the last step) or ``clients`` (their gradients' cosine with the last step, on
        their first mini-batch; the server sends them that step).
    global_lr_min, global_lr_max : float
        Bounds of the global LR α; the upper one is 3 by default, since the heavy ball
        already multiplies a steady update by up to 1/(1 − μ).
    server_momentum : float
        μ, the momentum of the updates the server steps along.
    heavy_ball : bool
        FedAvgM's momentum, m ← μm + Δ, rather than the average m ← μm + (1 − μ)Δ.
    restart : bool
        Restart the momentum from the round's update whenever the averaged global
        signal is negative (the last step overshot).
    signal_smoothing : float
        ρ, the exponential average of the global cosine over rounds.
    rms_normalised : bool
        Divide that average by the same average of the squared cosine, so that α
        moves by its consistency over the last rounds, not by its size.
    log_space : bool
        Move both LRs multiplicatively (else additively).
    local_signal : str
        What drives the clients' LR: ``auto`` (``plateau`` under plain SGD, ``clients``
        there without probe rows, ``server`` under an adaptive optimiser such as Adam,
        whose descent cosine falls at any noise floor), ``clients`` (their reported
        descent cosine), ``server`` (the global cosine), ``both`` (the smaller of the
        descent cosine and the global cosine's consistency, its average over its RMS),
        ``either`` (the larger of the descent cosine and the global cosine) or
        ``plateau`` (that larger one only in a round whose clients' pooled probe loss
        moved by at most ``plateau_tolerance``; needs ``probe_examples`` > 0).
    plateau_consistency : bool
        Lift the clients' LR on a plateau by the global cosine's consistency (its average
        over its RMS) instead of its average; read only where the local signal is (or
        ``auto`` resolves to) ``plateau``.
    plateau_tolerance : float
        The relative change of the clients' pooled probe loss over their training up to
        which a round counts as a plateau; by default the loss guard's noise band, so a
        round is flat, risen or falling by one test.
    plateau_full_step : bool
        Lift the clients' LR by the full step β_l (double it) in a second plateau round in
        a row whose pooled probe loss did not rise and whose own global cosine is
        positive, however the averages lag; read where ``plateau_consistency`` is.
    plateau_full_step_progress : bool
        Take that full step only while the clients' pooled probe loss fell by at least as
        large a fraction as in the previous round, so that a doubled LR which bought no
        more progress is not doubled again; read where ``plateau_full_step`` is.
    plateau_peak_rounds : int
        Once the clients' LR has stayed below the highest value it rose to (above η_0) for
        this many rounds in a row, plateau lifts take it no higher than that peak until
        the clients' own descent cosine does; 0 never caps them. Read where the local
        signal is (or ``auto`` resolves to) ``plateau`` or ``either``.
    local_hyper_lr : float
        β_l, the log-step of the clients' LR per unit of its signal.
    local_rms_normalised : bool
        Replace the clients' signal by its average over its RMS in a window of ρ.
    local_lr_min_factor, local_lr_max_factor : float
        Bounds of the clients' LR as multiples of η_0.
    probe_examples : int
        The loss guard: each client measures its loss on this many of its training
        rows before and after training, and a round whose loss rose lowers the clients'
        LR by the largest step; 0 turns the guard off.
    guard_tolerance : float
        The relative rise of the clients' pooled probe loss the guard lets pass as a
        plateau's noise (0: any rise fires it).
    global_guard : bool
        Guard the global LR too: each client also measures its probe loss on the
        previous global model, and a rise since then counts as a global signal of -1
        (needs ``probe_examples`` > 0).
    divergence_ratio : float
        The cap for diverged rounds: a round whose clients' pooled probe loss after
        training is more than this many times the loss before steps no further than
        FedAvg would (min(α, 1) times the clients' average update, the momentum
        restarted) and lowers the clients' LR by the largest step; 0 never caps, else
        at least 1 (needs ``probe_examples`` > 0).

    """

    hyper_lr: float = 1.0
    global_signal: str = "clients"
    global_lr_min: float = 0.1
    global_lr_max: float = 3.0
    server_momentum: float = 0.9
    heavy_ball: bool = True
    restart: bool = True
    signal_smoothing: float = 0.5
    rms_normalised: bool = False
    local_rms_normalised: bool = False
    log_space: bool = True
    local_signal: str = "auto"
    plateau_consistency: bool = True
    plateau_tolerance: float = 0.05
    plateau_full_step: bool = True
    plateau_full_step_progress: bool = False
    plateau_peak_rounds: int = 0
    local_hyper_lr: float = 0.7
    local_lr_min_factor: float = 0.01
    local_lr_max_factor: float = 1000.0
    probe_examples: int = 32
    guard_tolerance: float = 0.05
    global_guard: bool = False
    divergence_ratio: float = 2.0


def _check(config: ExperimentConfig, params: AutoParams) -> None:
    at_least("strategy.hyper_lr", params.hyper_lr, 0.0)
    at_least("strategy.local_hyper_lr", params.local_hyper_lr, 0.0)
    within_own_bounds(
        "strategy.global_lr", params.global_lr, params.global_lr_min, params.global_lr_max
    )
    in_range("strategy.server_momentum", params.server_momentum, 0.0, 1.0, closed_high=False)
    in_range("strategy.signal_smoothing", params.signal_smoothing, 0.0, 1.0, closed_high=False)
    one_of("strategy.local_signal", params.local_signal, LOCAL_SIGNAL_CHOICES)
    one_of("strategy.global_signal", params.global_signal, GLOBAL_SIGNALS)
    # η_0 lies within its bounds, as SL's.
    in_range(
        "strategy.local_lr_min_factor", params.local_lr_min_factor, 1e-12, 1.0, closed_high=True
    )
    at_least("strategy.local_lr_max_factor", params.local_lr_max_factor, 1.0)
    at_least("strategy.probe_examples", params.probe_examples, 0)
    at_least("strategy.guard_tolerance", params.guard_tolerance, 0.0)
    at_least("strategy.plateau_tolerance", params.plateau_tolerance, 0.0)
    at_least("strategy.plateau_peak_rounds", params.plateau_peak_rounds, 0)
    if params.divergence_ratio != 0.0 and not params.divergence_ratio >= 1.0:
        raise ConfigError("strategy.divergence_ratio", params.divergence_ratio, "0 (off) or >= 1")
    for setting, wanted in (
        ("global_guard", params.global_guard),
        ("divergence_ratio", params.divergence_ratio),
        ("local_signal=plateau", params.local_signal == "plateau"),
    ):
        if wanted and params.probe_examples < 1:
            # Each compares probe losses: there are none to compare without probe rows.
            raise ConfigError(
                "strategy.probe_examples", params.probe_examples, f"a number >= 1 with {setting}"
            )


def local_signal(config: ExperimentConfig, params: AutoParams) -> str:
    """Return what drives the clients' LR, resolving ``auto`` by the clients' optimiser.

    The clients' descent cosine is the hypergradient of their own loss at the end of
    the round: under SGD it raises a 10x too small LR in every early round, and on a loss
    plateau the global signal lifts it (``plateau``, which needs probe rows); under Adam
    it fell in every round of every run, at any LR (docs/benchmarks.md), so adaptive
    optimisers take the global signal instead.
    """
    if params.local_signal != "auto":
        return params.local_signal
    if config.client.optimizer in ADAPTIVE_OPTIMIZERS:
        return "server"
    return "plateau" if params.probe_examples > 0 else "clients"


def _auto(config: ExperimentConfig, params: AutoParams) -> AutoLR:
    signal = local_signal(config, params)
    return AutoLR(
        initial_lr=params.global_lr,
        initial_client_lr=config.client.lr,
        global_hyper_lr=params.hyper_lr,
        local_hyper_lr=params.local_hyper_lr,
        momentum=params.server_momentum,
        smoothing=params.signal_smoothing,
        log_space=params.log_space,
        local_signal=signal,
        lr_bounds=(params.global_lr_min, params.global_lr_max),
        client_lr_bounds=(params.local_lr_min_factor, params.local_lr_max_factor),
        global_signal=params.global_signal,
        probe_examples=params.probe_examples,
        guard_tolerance=params.guard_tolerance,
        global_guard=params.global_guard,
        divergence_ratio=params.divergence_ratio,
        heavy_ball=params.heavy_ball,
        restart=params.restart,
        rms_normalised=params.rms_normalised,
        local_rms_normalised=params.local_rms_normalised,
        plateau_consistency=params.plateau_consistency and signal == "plateau",
        plateau_tolerance=params.plateau_tolerance,
        plateau_full_step=params.plateau_full_step and signal == "plateau",
        plateau_full_step_progress=(
            params.plateau_full_step_progress and params.plateau_full_step and signal == "plateau"
        ),
        plateau_peak_rounds=params.plateau_peak_rounds if signal in LIFTING_SIGNALS else 0,
    )


register_method(
    Method(
        "fedhyper_auto",
        "FedHyper-Auto",
        AutoParams,
        rule_strategy,
        _check,
        server_rule=_auto,
        client_rule=DESCENT_COSINE,
        schedules_client_lr=True,
    )
)
