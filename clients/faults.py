"""Apply the server's fault plan to a client's training reply (robustness tests only)."""

from __future__ import annotations

import time

from flwr.app import ArrayRecord, Message

from fedhyper.faults import Fault, InjectedFaultError, poison_state
from fedhyper.wire import ARRAYS_RECORD, TrainInstruction

__all__ = ["inject_fault"]


def inject_fault(instruction: TrainInstruction, client_id: int, reply: Message) -> Message:
    """Crash, delay or poison ``reply`` if this client drew that fault, else pass it on.

    Parameters
    ----------
    instruction : TrainInstruction
        The round's instruction: the fault plan, round and attempt.
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
    plan = instruction.faults
    if plan is None:
        return reply
    fault = plan.draw(client_id, instruction.server_round, instruction.attempt)
    if fault is Fault.CRASH:
        raise InjectedFaultError(f"injected crash (faults.crash_probability={plan.crash:g})")
    if fault is Fault.DELAY:
        time.sleep(plan.delay_s)
    elif fault is Fault.POISON:
        honest = reply.content.array_records[ARRAYS_RECORD].to_torch_state_dict()
        poisoned = poison_state(honest, plan.poison_kind, plan.poison_scale)
        reply.content[ARRAYS_RECORD] = ArrayRecord(poisoned)
    return reply
