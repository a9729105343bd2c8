"""Apply the server's fault plan to a client's training reply (robustness tests only)."""

from __future__ import annotations

import time

from flwr.app import ArrayRecord, Message

from fedhyper.faults import Fault, FaultPlan, InjectedFaultError, poison_state
from fedhyper.task import ARRAYS_KEY, ATTEMPT_KEY

__all__ = ["inject_fault"]


def inject_fault(message: Message, client_id: int, reply: Message) -> Message:
    """Crash, delay or poison ``reply`` if this client drew that fault, else pass it on.

    Parameters
    ----------
    message : Message
        The training message, whose config carries the fault plan, round and attempt.
    client_id : int
        The client's partition id (it seeds the client's draw).
    reply : Message
        The honest reply.

    Returns
    -------
    Message
        ``reply``, poisoned in place for a ``poison`` fault, returned late for ``delay``.

    Raises
    ------
    InjectedFaultError
        For a ``crash`` fault.

    """
    config = message.content.config_records["config"]
    plan = FaultPlan.from_mapping(config)
    if plan is None:
        return reply
    server_round, attempt = config["server-round"], config.get(ATTEMPT_KEY, 0)
    if not isinstance(server_round, int) or not isinstance(attempt, int):
        raise TypeError(f"round and attempt must be integers, got {server_round!r}, {attempt!r}")
    fault = plan.draw(client_id, server_round, attempt)
    if fault is Fault.CRASH:
        raise InjectedFaultError(f"injected crash (faults.crash_probability={plan.crash:g})")
    if fault is Fault.DELAY:
        time.sleep(plan.delay_s)
    elif fault is Fault.POISON:
        honest = reply.content.array_records[ARRAYS_KEY].to_torch_state_dict()
        poisoned = poison_state(honest, plan.poison_kind, plan.poison_scale)
        reply.content[ARRAYS_KEY] = ArrayRecord(poisoned)
    return reply
