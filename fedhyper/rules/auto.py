r"""FedHyper-Auto: scale-free hypergradient schedules of the global and the local LR.

The reference rules add the raw inner product :math:`\langle\Delta_t, \Delta_{t-1}\rangle`
to a learning rate. Its size is that of :math:`\|\Delta\|^2`, so it depends on the model
size, the client optimiser and the learning rates themselves: a fixed hyper-LR saturates
the bounds in one setting and never moves in another. Every signal here is a cosine,
dimensionless, and every step is relative (in log space, as Baydin et al. 2018's
normalised multiplicative rule), so one set of defaults means the same thing at any
scale, and a learning rate 10x off is corrected in as many rounds as one 10% off needs
for a 10% change.

Ingredients, each with its own off switch (``0`` or ``False``):

* the global signal :math:`\cos(\Delta_t, d_{t-1})` against the direction :math:`d` the
  server applied last round, the hypergradient of the loss with respect to the global
  LR up to a positive factor; or, measured by the clients, Baydin et al.'s exact
  hypergradient :math:`\cos(-\nabla f_i(w_t), d_{t-1})`, which does not depend on the
  clients' optimiser;
* its exponential average over rounds (partial participation makes it noisy);
* server momentum on the updates, as an exponential average, so that the global LR
  keeps its meaning (a steady :math:`\Delta` moves the model by :math:`\alpha\Delta`), or
  as a heavy ball (FedAvgM's form: a steady :math:`\Delta` moves it by
  :math:`\alpha\Delta/(1-\mu)`), so that :math:`\alpha_0 = 1` starts where FedAvgM is;
* optionally, an adaptive restart of that momentum (O'Donoghue and Candès 2015): while
  the averaged global signal is negative, the last step overshot, and the momentum
  restarts from this round's update instead of carrying the overshoot on;
* multiplicative (log-space) rather than additive steps;
* a schedule of the clients' LR from the server, driven by the clients' own
  hypergradient cosine (:class:`~fedhyper.rules.descent_cosine.DescentCosine`) or by
  the global signal;
* a loss guard on that schedule: a cosine is first-order and blind to a step that
  overshoots by far (on a loss plateau successive gradients keep pointing the same way
  at any LR), so when the clients' loss on their own rows rose over the round by more
  than a plateau's noise (:func:`~fedhyper.rules.loss_guard.loss_rose`), the clients' LR
  goes down by the largest step instead, whatever the cosine says;
* the same guard on the global LR: when the clients' loss on those rows is higher on
  the model they received than on the previous round's, the server's last step went
  uphill, however its cosine reads, and the global signal of the round is -1;
* optionally, a ceiling on those plateau lifts: once the clients' LR has come down from
  its highest value and stayed below it for some rounds, a lift on a later plateau
  takes it no higher than that peak, since the model has already been trained there
  and left it; only the clients' own signal takes it past;
* a cap for diverged rounds: when the clients' training made that loss several times
  worse (:func:`~fedhyper.rules.loss_guard.loss_diverged`), extrapolating past their
  average is unfounded, so the server steps no further than FedAvg would.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor

from fedhyper.rules.base import ServerRule, ServerStep, require_keys, restore_tensors
from fedhyper.rules.hypergradient import check_bounds, clip, hypergradient_signal
from fedhyper.rules.loss_guard import (
    loss_diverged,
    loss_flat,
    loss_rose,
    pooled_loss_ratio,
    ratio_flat,
)
from fedhyper.rules.signal_average import SignalAverage

__all__ = [
    "DESCENT_COSINE_REPORT",
    "GLOBAL_COSINE_REPORT",
    "GLOBAL_SIGNALS",
    "LIFTING_SIGNALS",
    "LOCAL_SIGNALS",
    "AutoLR",
    "bounded_cosine",
]

GLOBAL_SIGNALS = ("server", "clients")
"""What drives the global LR: the server's cosine of the updates, or the clients' one."""

LOCAL_SIGNALS = ("clients", "server", "both", "either", "plateau")
"""What drives the clients' LR: their reported descent cosine, the global signal, the
smaller of the descent cosine and the global signal's consistency, the larger of the
descent cosine and the global signal, or that larger one only on a loss plateau."""

LIFTING_SIGNALS = ("either", "plateau")
"""The local signals that may lift the clients' LR by the global signal (and so be capped)."""

DESCENT_COSINE_REPORT = "descent-cosine"
"""The clients' report key of their mean descent cosine, which :class:`AutoLR` observes."""

GLOBAL_COSINE_REPORT = "global-cosine"
r"""The clients' report key of :math:`\cos(-\nabla f_i(w_t), d_{t-1})`."""

_STATE_KEYS = (
    "alpha",
    "client_lr",
    "global_signal",
    "local_signal",
    "rounds",
    "last_probe_ratio",
    "client_lr_peak",
    "rounds_below_peak",
    "client_lr_ceiling",
    "direction",
)


def bounded_cosine(value: float) -> float:
    """Return ``value`` clipped to ``[-1, 1]``, or 0 (no move) when it is NaN or infinite.

    A cosine computed from updates near float32's range, or reported by a client whose
    step overflowed, may be NaN; rounding may put a true cosine of 1 just above 1.
    """
    return clip(value, (-1.0, 1.0)) if math.isfinite(value) else 0.0


class AutoLR(ServerRule):
    r"""Scale-free hypergradient descent on the global and the clients' learning rate.

    Round :math:`t = 0, 1, \dots` receives :math:`\Delta_t` (new minus old):

    .. math::

        s_t &= \cos(\Delta_t, m_{t-1}) \quad (t > 0;\ \text{none at } t = 0), \\
        e_t &= \rho\, e_{t-1} + (1 - \rho)\, s_t, \qquad
            \hat s_t = e_t / (1 - \rho^{n_t}) \quad (n_t \text{ signals so far}), \\
        \log\alpha_t &= \operatorname{clip}\bigl(\log\alpha_{t-1} + \beta_g \hat s_t,\
            \log\alpha_{\min}, \log\alpha_{\max}\bigr), \\
        m_t &= \mu\, m_{t-1} + (1 - \mu)\, \Delta_t \quad (m_{-1} = 0), \qquad
            w_{t+1} = w_t + \alpha_t\, m_t / (1 - \mu^{t+1}), \\
        \log\eta_{t+1} &= \operatorname{clip}\bigl(\log\eta_t + \beta_l c_t,\
            \log\eta_{\min}, \log\eta_{\max}\bigr),

    where :math:`c_t` is the clients' mean descent cosine of round :math:`t`
    (``local_signal="clients"``, passed in by :meth:`observe_reports` or
    :meth:`observe_local_signal`; 0 when none came) or :math:`\hat s_t`
    (``"server"``), or with ``"both"`` the smaller of :math:`c_t` and the global signal's
    average over its RMS (the client LR rises only while the global step agrees), or
    with ``"either"`` the larger of :math:`c_t` and :math:`\hat s_t` (the client LR rises
    while either horizon sees progress: the greedy descent cosine reads slightly negative
    on a noisy plateau that the round-long global signal still crosses), or with
    ``"plateau"`` that larger one only in a round whose clients' pooled probe loss moved
    by at most ``plateau_tolerance`` either way over their training
    (:func:`~fedhyper.rules.loss_guard.loss_flat`), :math:`c_t` otherwise (a client LR
    whose clients lower their loss is left to their own signal), with
    ``plateau_consistency`` the global signal's average over its RMS in place of
    :math:`\hat s_t` there (on a plateau the global cosine is small but keeps its sign,
    and its consistency moves the client LR at up to the full step), and with
    ``plateau_full_step`` 1 in place of either in a plateau round that follows another,
    in which the clients' pooled probe loss did not rise and whose own global signal
    :math:`s_t` is positive (a flat loss that persists, that the clients still lower
    and that the global step still lowers says the client LR is too small by an
    unknown factor: it doubles, at :math:`\beta_l = 0.7`, every such round; one flat
    round among falling ones is as likely the noise of partial participation, and a
    loss that rose, however little, does not show a too small LR), and with
    ``plateau_full_step_progress`` only while that loss fell by at least as large a
    fraction as in the previous round (a doubled LR that bought no more progress than
    the last one is not too small: on a valley's floor a large LR stalls the loss as a
    small one does on a plateau), and with ``plateau_peak_rounds`` :math:`K > 0` no lift
    of ``"either"`` or ``"plateau"`` takes :math:`\eta_{t+1}` above a ceiling
    :math:`\bar\eta`, set to the peak :math:`\max_{s \le t}\eta_s` once :math:`\eta` has
    stayed below that peak for :math:`K` rounds in a row, if the peak lies above
    :math:`\eta_0`, and cleared when the clients'
    own :math:`\beta_l c_t` alone takes :math:`\eta` past it (the greedy descent cosine
    drifts an LR down by a few percent a round after a climb; a lift back past the LR the
    run already came down from overshoots, while the climb out of a first plateau,
    which has no such peak, is left alone); the first round,
    without a global signal, uses :math:`c_t` in all three. With the loss guard
    (``probe_examples > 0``), a round in which the clients' loss on their first
    ``probe_examples`` rows rose (:func:`~fedhyper.rules.loss_guard.loss_rose` at
    ``guard_tolerance``, passed in by :meth:`observe_probe_losses`) has
    :math:`\beta_l c_t` replaced by :math:`-\beta_l`; with ``global_guard`` too, a round
    in which that loss was higher on :math:`w_t` than on :math:`w_{t-1}` by the same
    test has :math:`s_t = -1`. With ``divergence_ratio`` :math:`\lambda > 0`, a round in
    which the clients' training made that pooled loss more than :math:`\lambda` times
    what it was (:func:`~fedhyper.rules.loss_guard.loss_diverged`) counts as a guard's
    rise for the clients' LR, restarts the momentum from :math:`\Delta_t` and steps by
    :math:`\min(\alpha_t, 1)\,\Delta_t`: the clients' models got worse, and their
    average is as far as the server goes along them. With :math:`\mu = 0`
    the direction :math:`m_{t-1}` is :math:`\Delta_{t-1}` and the step is
    :math:`\alpha_t\Delta_t`; the bias correction makes the first steps full-sized. With
    ``restart=True``, a round with :math:`\hat s_t < 0` sets :math:`m_{t-1} = 0` first, and
    the bias correction keeps its count, so the step shrinks to about
    :math:`\alpha_t(1-\mu)\Delta_t` and grows back as the average refills: α was learnt for
    the averaged direction, whose norm is smaller than one noisy :math:`\Delta_t`'s. With
    ``heavy_ball=True`` the momentum is FedAvgM's instead,
    :math:`m_t = \mu m_{t-1} + \Delta_t` and :math:`w_{t+1} = w_t + \alpha_t m_t`. With
    ``log_space=False`` the two LRs move additively instead,
    :math:`\alpha_t = \alpha_{t-1} + \beta_g\hat s_t` and
    :math:`\eta_{t+1} = \eta_t + \beta_l c_t \eta_0`, clipped to the same bounds.

    With ``global_signal="clients"`` (the default), :math:`s_t` is instead the clients' mean
    :math:`\cos(-\nabla f_i(w_t), d_{t-1})` of round :math:`t`, from their first
    mini-batch's gradient or their round's summed gradients (the client rule's
    ``global_horizon``), against the step :math:`d_{t-1} = w_t - w_{t-1}` the server applied
    (:attr:`sends_applied_step`; passed in by :meth:`observe_reports`; none at
    :math:`t = 0` or when no client sent one).

    With ``rms_normalised``, :math:`\hat s_t` is the average of :math:`s` over its RMS in
    the same window (:class:`~fedhyper.rules.signal_average.SignalAverage`): its
    consistency in :math:`[-1, 1]`, not its size. With ``local_rms_normalised``,
    :math:`c_t` is replaced the same way by its own average over its RMS (window
    :math:`\rho`).

    Every input enters through a cosine, so multiplying all updates by a constant, or
    repeating the parameter vector, leaves the LR trajectory unchanged.

    Parameters
    ----------
    initial_lr
        :math:`\alpha_0`.
    initial_client_lr
        :math:`\eta_0`, the clients' LR in the first round.
    global_hyper_lr
        :math:`\beta_g`; 0 keeps :math:`\alpha = \alpha_0`.
    local_hyper_lr
        :math:`\beta_l`; 0 keeps :math:`\eta = \eta_0`.
    momentum
        :math:`\mu \in [0, 1)`; 0 turns server momentum off.
    smoothing
        :math:`\rho \in [0, 1)`; 0 uses each round's cosine as is.
    heavy_ball
        FedAvgM's momentum (an undamped sum) rather than an exponential average.
    restart
        Restart the momentum in every round whose averaged global signal is negative.
    rms_normalised, local_rms_normalised
        Divide the global (local) signal's average by its RMS, see above.
    log_space
        Multiplicative steps (default) or additive ones.
    local_signal
        ``"clients"``, ``"server"``, ``"both"``, ``"either"`` or ``"plateau"`` (which needs
        ``probe_examples > 0``), see above.
    plateau_consistency
        With ``local_signal="plateau"``, lift the client LR on a plateau by the global
        signal's consistency rather than its average, see above.
    plateau_tolerance
        The relative change of the clients' pooled probe loss over their training up to
        which a round counts as a plateau.
    plateau_full_step
        With ``local_signal="plateau"``, lift the client LR by the full step
        :math:`\beta_l` in a second plateau round in a row whose probe loss did not rise
        and whose global signal is positive, see above.
    plateau_full_step_progress
        With ``plateau_full_step``, take the full step only in a round whose pooled probe
        ratio is at most the previous round's, see above.
    plateau_peak_rounds
        :math:`K`, the rounds in a row below its peak after which the client LR's peak
        becomes the ceiling of plateau lifts, see above; 0 never caps them.
    global_signal
        ``"server"`` or ``"clients"``, see above.
    lr_bounds
        :math:`(\alpha_{\min}, \alpha_{\max})`, positive.
    client_lr_bounds
        :math:`(\eta_{\min}, \eta_{\max})` as multiples of :math:`\eta_0`, positive.
    probe_examples
        Rows of each client's training data on which it measures its loss before and
        after training, for the loss guard; 0 turns the guard off.
    guard_tolerance
        The relative rise of the clients' pooled probe loss the guard lets pass as a
        plateau's noise; 0 fires on any rise.
    global_guard
        Guard the global LR too: each client also measures its probe loss on the
        previous global model, :math:`w_t - d_{t-1}`, and a rise by more than
        ``guard_tolerance`` sets :math:`s_t = -1`. Needs ``probe_examples > 0``.
    divergence_ratio
        :math:`\lambda`: cap the step of a round whose clients' pooled probe loss after
        training is more than :math:`\lambda` times the loss before; 0 never, else at least
        1. Needs ``probe_examples > 0``.

    Raises
    ------
    ValueError
        On a non-positive LR or bound, unordered bounds, :math:`\alpha_0` outside its
        bounds, :math:`\mu` or :math:`\rho` outside ``[0, 1)``, a negative
        ``probe_examples`` or ``guard_tolerance``, ``global_guard``, ``divergence_ratio``
        or ``local_signal="plateau"`` without probes, ``plateau_consistency`` without
        ``local_signal="plateau"``, ``plateau_full_step`` likewise, a negative
        ``plateau_tolerance``, ``plateau_full_step_progress`` without
        ``plateau_full_step``, a negative ``plateau_peak_rounds`` or a positive one
        without a lift (``local_signal`` ``"either"`` or ``"plateau"``), a
        ``divergence_ratio`` in ``(0, 1)``, or an unknown
        ``local_signal`` or ``global_signal``.

    """

    def __init__(
        self,
        initial_lr: float = 1.0,
        initial_client_lr: float = 0.01,
        global_hyper_lr: float = 1.0,
        local_hyper_lr: float = 0.7,
        momentum: float = 0.9,
        smoothing: float = 0.5,
        log_space: bool = True,
        local_signal: str = "clients",
        lr_bounds: tuple[float, float] = (0.1, 10.0),
        client_lr_bounds: tuple[float, float] = (0.01, 100.0),
        global_signal: str = "clients",
        probe_examples: int = 0,
        heavy_ball: bool = False,
        rms_normalised: bool = False,
        local_rms_normalised: bool = False,
        restart: bool = False,
        guard_tolerance: float = 0.05,
        global_guard: bool = False,
        divergence_ratio: float = 0.0,
        plateau_consistency: bool = False,
        plateau_tolerance: float = 0.05,
        plateau_full_step: bool = False,
        plateau_full_step_progress: bool = False,
        plateau_peak_rounds: int = 0,
    ) -> None:
        self.lr_bounds = check_bounds("lr_bounds", lr_bounds)
        factors = check_bounds("client_lr_bounds", client_lr_bounds)
        if min(self.lr_bounds[0], factors[0], initial_client_lr) <= 0.0:
            raise ValueError("learning rates and their bounds must be positive")
        if not self.lr_bounds[0] <= initial_lr <= self.lr_bounds[1]:
            raise ValueError(f"initial_lr must lie within {self.lr_bounds}, got {initial_lr}")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must lie in [0, 1), got {momentum}")
        if local_signal not in LOCAL_SIGNALS:
            raise ValueError(f"local_signal must be one of {LOCAL_SIGNALS}, got {local_signal!r}")
        if global_signal not in GLOBAL_SIGNALS:
            raise ValueError(
                f"global_signal must be one of {GLOBAL_SIGNALS}, got {global_signal!r}"
            )
        if probe_examples < 0:
            raise ValueError(f"probe_examples must be non-negative, got {probe_examples}")
        if guard_tolerance < 0.0:
            raise ValueError(f"guard_tolerance must be non-negative, got {guard_tolerance}")
        if global_guard and probe_examples == 0:
            raise ValueError("global_guard needs probe_examples > 0")
        if local_signal == "plateau" and probe_examples == 0:
            raise ValueError("local_signal='plateau' needs probe_examples > 0")
        for name, wanted in (
            ("plateau_consistency", plateau_consistency),
            ("plateau_full_step", plateau_full_step),
        ):
            if wanted and local_signal != "plateau":
                raise ValueError(f"{name} needs local_signal='plateau'")
        if plateau_full_step_progress and not plateau_full_step:
            raise ValueError("plateau_full_step_progress needs plateau_full_step")
        if plateau_peak_rounds < 0:
            raise ValueError(f"plateau_peak_rounds must be non-negative, got {plateau_peak_rounds}")
        if plateau_peak_rounds and local_signal not in LIFTING_SIGNALS:
            raise ValueError("plateau_peak_rounds needs local_signal='either' or 'plateau'")
        if plateau_tolerance < 0.0:
            raise ValueError(f"plateau_tolerance must be non-negative, got {plateau_tolerance}")
        if divergence_ratio != 0.0 and not divergence_ratio >= 1.0:
            raise ValueError(f"divergence_ratio must be 0 or at least 1, got {divergence_ratio}")
        if divergence_ratio and probe_examples == 0:
            raise ValueError("divergence_ratio needs probe_examples > 0")
        self.divergence_ratio = float(divergence_ratio)
        self._probe_examples = int(probe_examples)
        self.global_guard = global_guard
        self.guard_tolerance = float(guard_tolerance)
        self.base_client_lr = float(initial_client_lr)
        self.client_lr_bounds = (factors[0] * self.base_client_lr, factors[1] * self.base_client_lr)
        self.global_hyper_lr = float(global_hyper_lr)
        self.local_hyper_lr = float(local_hyper_lr)
        self.momentum = float(momentum)
        self.heavy_ball = heavy_ball
        self.restart = restart
        self.log_space = log_space
        self.local_signal = local_signal
        self.plateau_consistency = plateau_consistency
        self.plateau_tolerance = float(plateau_tolerance)
        self.plateau_full_step = plateau_full_step
        self.plateau_full_step_progress = plateau_full_step_progress
        self.plateau_peak_rounds = int(plateau_peak_rounds)
        self.global_signal = global_signal
        self._alpha = float(initial_lr)
        self._client_lr = self.base_client_lr
        self._global_average = SignalAverage(smoothing, rms_normalised)
        # The clients' signal is used as is unless normalised, which needs a window.
        self._local_average = SignalAverage(
            smoothing if local_rms_normalised else 0.0, local_rms_normalised
        )
        self._rounds = 0
        self._last_probe_ratio = math.nan
        self._client_lr_peak = self.base_client_lr
        self._rounds_below_peak = 0
        self._client_lr_ceiling = math.inf
        self._direction: list[Tensor] | None = None
        self._pending_local_signal = 0.0
        self._pending_global_signal: float | None = None
        self._pending_probes: tuple[list[float], list[float], list[float]] = ([], [], [])

    @property
    def alpha(self) -> float:
        r"""The global LR of the latest round (:math:`\alpha_0` before any)."""
        return self._alpha

    @property
    def client_lr(self) -> float:
        r"""The clients' LR for the next round (:math:`\eta_0` before any round)."""
        return self._client_lr

    @property
    def sends_applied_step(self) -> bool:
        """Whether the clients need :math:`d_{t-1}`: for the global signal or its guard."""
        return self.global_signal == "clients" or self.global_guard

    @property
    def probes_previous_model(self) -> bool:
        """Whether the clients probe :math:`w_{t-1}` too: for the global guard."""
        return self.global_guard

    @property
    def probe_examples(self) -> int:
        """Rows each client measures its loss on for the loss guard (0: no guard)."""
        return self._probe_examples

    def initial_client_lr(self) -> float:
        r"""Return :math:`\eta_0`, the clients' LR in the first round."""
        return self.base_client_lr

    def observe_local_signal(self, cosine: float) -> None:
        r"""Pass in :math:`c_t`, the clients' mean descent cosine, before this round's step.

        Ignored unless ``local_signal == "clients"``. A NaN or infinite value counts as
        0; others are clipped to ``[-1, 1]``.
        """
        self._pending_local_signal = bounded_cosine(cosine)

    def observe_reports(self, means: Mapping[str, float]) -> None:
        """Take the clients' mean cosines, when they sent them."""
        if DESCENT_COSINE_REPORT in means:
            self.observe_local_signal(means[DESCENT_COSINE_REPORT])
        if GLOBAL_COSINE_REPORT in means:
            self._pending_global_signal = bounded_cosine(means[GLOBAL_COSINE_REPORT])

    def observe_probe_losses(
        self, before: Sequence[float], after: Sequence[float], previous: Sequence[float] = ()
    ) -> None:
        """Take each client's probe losses (see :class:`ServerRule`), before :meth:`step`."""
        self._pending_probes = (list(before), list(after), list(previous))

    @property
    def loss_rose(self) -> bool:
        """Whether the guard holds the pending round's clients' loss as risen.

        No probe at all, and a probe loss that is missing or not finite, count as risen
        (:func:`~fedhyper.rules.loss_guard.loss_rose`).
        """
        if not self._probe_examples:
            return False
        before, after, _ = self._pending_probes
        return loss_rose(before, after, tolerance=self.guard_tolerance)

    @property
    def loss_flat(self) -> bool:
        """Whether the pending round's clients' pooled probe loss moved within tolerance.

        Never without probes; otherwise :func:`~fedhyper.rules.loss_guard.loss_flat` at
        ``plateau_tolerance``.
        """
        if not self._probe_examples:
            return False
        before, after, _ = self._pending_probes
        return loss_flat(before, after, tolerance=self.plateau_tolerance)

    @property
    def step_went_uphill(self) -> bool:
        """Whether the global guard holds the clients' loss as risen since the last round.

        Never without ``global_guard``, nor in a round in which no client measured the
        previous model (the first); otherwise as :attr:`loss_rose`.
        """
        before, _, previous = self._pending_probes
        if not (self.global_guard and any(math.isfinite(loss) for loss in previous)):
            return False
        return loss_rose(previous, before, tolerance=self.guard_tolerance)

    @property
    def clients_diverged(self) -> bool:
        """Whether the pending round's clients diverged: their step is capped.

        Never with ``divergence_ratio`` 0; otherwise
        :func:`~fedhyper.rules.loss_guard.loss_diverged` at that limit.
        """
        if not self.divergence_ratio:
            return False
        before, after, _ = self._pending_probes
        return loss_diverged(before, after, self.divergence_ratio)

    def step(self, delta: Sequence[Tensor]) -> ServerStep:
        """Move both LRs along their signals and return the global step; see the class."""
        diverged = self.clients_diverged
        # NaN without probes, which is never flat and fails every comparison below.
        ratio = pooled_loss_ratio(*self._pending_probes[:2])
        flat = ratio_flat(ratio, self.plateau_tolerance)
        smoothed = 0.0
        signal = self._global_signal(delta)
        if self.step_went_uphill:
            # A cosine at w_t is first-order: on a plateau it reads "keep going" after a
            # step that went far uphill, which only the loss itself shows.
            signal = -1.0
        if signal is not None:
            smoothed = self._global_average.add(signal)
            self._alpha = self._move(self._alpha, self.global_hyper_lr * smoothed, self.lr_bounds)
        if self.local_signal == "server":
            local = own = smoothed
        else:
            local = own = self._local_average.add(self._pending_local_signal)
            if self.local_signal == "both" and signal is not None:
                # Non-IID clients can keep lowering their own loss while the global model
                # does not improve: the client LR rises only when the global step agrees.
                local = min(local, self._global_average.consistency)
            elif signal is not None and (
                self.local_signal == "either" or (self.local_signal == "plateau" and flat)
            ):
                # The descent cosine is greedy: on a noisy plateau it reads slightly
                # negative while the global step, a round long, still makes progress.
                # Off a plateau it is left alone: at a well-chosen client LR it hovers
                # near 0 while the global signal may read a small positive value.
                lift = self._global_average.consistency if self.plateau_consistency else smoothed
                if (
                    self.plateau_full_step
                    and ratio_flat(self._last_probe_ratio, self.plateau_tolerance)
                    and signal > 0.0
                    and ratio <= 1.0
                    and (not self.plateau_full_step_progress or ratio <= self._last_probe_ratio)
                ):
                    # The averages lag a run of negative signals from an overshoot of the
                    # server; a flat loss that persists while the clients and this round's
                    # global step still lower it says the client LR is too small by an
                    # unknown factor.
                    lift = 1.0
                local = max(local, lift)
        if diverged or self.loss_rose:
            local = own = -1.0
        self._last_probe_ratio = ratio
        self._pending_local_signal = 0.0
        self._pending_global_signal = None
        self._pending_probes = ([], [], [])
        self._client_lr = self._next_client_lr(local, own)
        self._rounds += 1
        with torch.no_grad():
            if self._direction is None:
                self._direction = [torch.zeros_like(d) for d in delta]
            elif diverged or (self.restart and smoothed < 0.0):
                # The last step overshot, or the clients diverged: carrying the momentum
                # on would overshoot again.
                torch._foreach_zero_(self._direction)
            # m <- mu m + (1 - mu) Delta (or + Delta), in place on the rule's own buffer.
            torch._foreach_mul_(self._direction, self.momentum)
            weight = 1.0 if self.heavy_ball else 1.0 - self.momentum
            torch._foreach_add_(self._direction, list(delta), alpha=weight)
            if diverged:
                # Each client's own model got worse: beyond their average, nothing
                # says the loss falls along it.
                update = list(torch._foreach_mul(list(delta), min(self._alpha, 1.0)))
            else:
                correction = 1.0 if self.heavy_ball else 1.0 - self.momentum**self._rounds
                scale = self._alpha / correction
                update = list(torch._foreach_mul(self._direction, scale))
        return ServerStep(
            update=update,
            global_lr=self._alpha,
            client_lr=self._client_lr,
            hypergradient=smoothed,
            clients_diverged=diverged,
        )

    def _next_client_lr(self, local: float, own: float) -> float:
        """Move the client LR by ``local``, a lift above ``own`` no higher than the ceiling."""
        moved = self._move_client_lr(local)
        if moved > self._client_lr_ceiling:
            if self._move_client_lr(own) > self._client_lr_ceiling:
                # The clients' own signal says the LR is too small even above that peak.
                self._client_lr_ceiling = math.inf
            else:
                moved = self._client_lr_ceiling
        if moved >= self._client_lr_peak:
            self._client_lr_peak, self._rounds_below_peak = moved, 0
        else:
            self._rounds_below_peak += 1
            # An LR that has only come down from eta_0 has no peak to fall back to.
            rose = self._client_lr_peak > self.base_client_lr
            if rose and 0 < self.plateau_peak_rounds <= self._rounds_below_peak:
                self._client_lr_ceiling = self._client_lr_peak
        return moved

    def _move_client_lr(self, signal: float) -> float:
        return self._move(
            self._client_lr,
            self.local_hyper_lr * signal,
            self.client_lr_bounds,
            self.base_client_lr,
        )

    def _global_signal(self, delta: Sequence[Tensor]) -> float | None:
        if self.global_signal == "clients":
            return self._pending_global_signal
        if self._direction is None:
            return None
        return bounded_cosine(hypergradient_signal(delta, self._direction, normalised=True))

    def _move(
        self, value: float, change: float, bounds: tuple[float, float], unit: float = 1.0
    ) -> float:
        # `unit` sets the size of an additive step: alpha moves in absolute terms, the
        # client LR in multiples of eta_0, so both are scale-free.
        moved = value * math.exp(change) if self.log_space else value + change * unit
        return clip(moved, bounds)

    def state_dict(self) -> dict[str, Any]:
        """Return the rule's state: both LRs and signal averages, rounds, probe ratio, peak, m."""
        return {
            "alpha": self._alpha,
            "client_lr": self._client_lr,
            "global_signal": self._global_average.state_dict(),
            "local_signal": self._local_average.state_dict(),
            "rounds": self._rounds,
            "last_probe_ratio": self._last_probe_ratio,
            "client_lr_peak": self._client_lr_peak,
            "rounds_below_peak": self._rounds_below_peak,
            "client_lr_ceiling": self._client_lr_ceiling,
            "direction": restore_tensors(self._direction),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore the state written by :meth:`state_dict`."""
        require_keys(state, *_STATE_KEYS)
        self._alpha = float(state["alpha"])
        self._client_lr = float(state["client_lr"])
        self._global_average.load_state_dict(state["global_signal"])
        self._local_average.load_state_dict(state["local_signal"])
        self._rounds = int(state["rounds"])
        self._last_probe_ratio = float(state["last_probe_ratio"])
        self._client_lr_peak = float(state["client_lr_peak"])
        self._rounds_below_peak = int(state["rounds_below_peak"])
        self._client_lr_ceiling = float(state["client_lr_ceiling"])
        self._direction = restore_tensors(state["direction"])
