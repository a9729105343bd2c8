"""Apply the server's fault plan to a client's training reply (robustness tests only)."""

from __future__ import annotations

from flwr.app import ArrayRecord, RecordDict

from clients.slots import LateReplyError
from fedhyper.faults import Fault, InjectedFaultError, poison_state
from fedhyper.wire import ARRAYS_RECORD, TrainInstruction

__all__ = ["inject_fault"]


def inject_fault(instruction: TrainInstruction, client_id: int, reply: RecordDict) -> RecordDict:
    """Crash, delay or poison ``reply`` if this client drew that fault, else pass it on.

    Parameters
    ----------
    instruction : TrainInstruction
        The round's instruction: the fault plan, round and attempt.
    client_id : int
        The client's partition id (it seeds the client's draw).
    reply : RecordDict
        The honest reply.

    Returns
    -------
    RecordDict
        ``reply``, poisoned in place for a ``poison`` fault.

    Raises
    ------
    InjectedFaultError
        For a ``crash`` fault.
    LateReplyError
        For a ``delay`` fault: the reply misses the round's deadline. The node reports it
        late rather than sleeping, which would hold up the clients bundled with it.

    """
    plan = instruction.faults
    if plan is None:
        return reply
    fault = plan.draw(client_id, instruction.server_round, instruction.attempt)
    if fault is Fault.CRASH:
        raise InjectedFaultError(f"injected crash (faults.crash_probability={plan.crash:g})")
    if fault is Fault.DELAY:
        raise LateReplyError(f"injected delay (faults.delay_probability={plan.delay:g})")
    if fault is Fault.POISON:
        honest = reply[ARRAYS_RECORD]
        assert isinstance(honest, ArrayRecord)
        poisoned = poison_state(honest.to_torch_state_dict(), plan.poison_kind, plan.poison_scale)
        reply[ARRAYS_RECORD] = ArrayRecord(poisoned)
    return reply
