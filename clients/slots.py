"""Serve a message that bundles several clients: one result or failure per client.

A node trains (or evaluates) every client the server assigned it, one after the other,
each from the message's shared records (the global model) and its own slot's records
(its instruction). A client that raises fails alone: its slot carries a
:class:`~fedhyper.wire.SlotFailure` and the others their results. A
:class:`~fedhyper.errors.ConfigError` is the node's (its node config, a device it
lacks), not the client's: it fails the whole message.
"""

from __future__ import annotations

from collections.abc import Callable

from flwr.app import ConfigRecord, Context, Message, RecordDict

from fedhyper.errors import ConfigError
from fedhyper.wire import FAILURE_RECORD, SlotFailure, slot_record, split_slots

__all__ = ["ClientHandler", "LateReplyError", "serve_slots"]

ClientHandler = Callable[[RecordDict, Context], RecordDict]
"""Handles one client: its records (shared and own, under their plain names) to its reply."""


class LateReplyError(RuntimeError):
    """Raised by a client that misses the round's deadline (the ``delay`` fault)."""


def serve_slots(message: Message, context: Context, handle: ClientHandler) -> Message:
    """Run ``handle`` for every client of a bundled message and bundle the replies.

    Parameters
    ----------
    message : Message
        The server's bundle.
    context : Context
        The node's context.
    handle : callable
        ``handle(records, context)`` returns one client's reply records.

    Returns
    -------
    Message
        The reply: each client's records under ``<record>@<slot>``.

    """
    content = message.content
    shared, slots = split_slots(list(content.keys()))
    replies = RecordDict()
    for slot, own in enumerate(slots):
        records = RecordDict({name: content[name] for name in shared})
        for name, bundled in own.items():
            records[name] = content[bundled]
        try:
            reply = handle(records, context)
        except LateReplyError as error:
            reply = _failure(SlotFailure(str(error), late=True))
        except ConfigError:
            raise
        # A client's error is its own: the clients bundled with it still reply.
        except Exception as error:
            reply = _failure(SlotFailure(f"{type(error)}:<'{error}'>"))
        for name, record in reply.items():
            replies[slot_record(name, slot)] = record
    return Message(replies, reply_to=message)


def _failure(failure: SlotFailure) -> RecordDict:
    return RecordDict({FAILURE_RECORD: ConfigRecord(failure.to_record())})
