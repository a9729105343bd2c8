from flwr.app import ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.supercore.task_identity import TaskIdentity

from clients.slots import LateReplyError, serve_slots
from fedhyper.wire import (
    CONFIG_RECORD,
    FAILURE_RECORD,
    METRICS_RECORD,
    SlotFailure,
    slot_record,
    split_slots,
)


def _handle(records: RecordDict, context: Context) -> RecordDict:
    slot = records.config_records[CONFIG_RECORD]["slot"]
    if slot == 1:
        raise ValueError("broken client")
    if slot == 2:
        raise LateReplyError("straggler")
    shared = records.metric_records["shared"]["value"]
    return RecordDict({METRICS_RECORD: MetricRecord({"value": float(shared) + float(slot)})})


def test_each_client_of_a_bundle_replies_or_fails_alone() -> None:
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    content = RecordDict({"shared": MetricRecord({"value": 10.0})})
    for slot in (0, 1, 2, 3):
        content[slot_record(CONFIG_RECORD, slot)] = ConfigRecord({"slot": slot})
    bundle = Message(content, dst_node_id=5, message_type=MessageType.TRAIN)
    context = Context(run_id=1, node_id=5, node_config={}, state=RecordDict(), run_config={})
    reply = serve_slots(bundle, context, _handle).content
    shared, slots = split_slots(list(reply.keys()))
    assert shared == []
    ok, failed = [METRICS_RECORD], [FAILURE_RECORD]
    assert [sorted(names) for names in slots] == [ok, failed, failed, ok]
    assert reply.metric_records[slot_record(METRICS_RECORD, 0)]["value"] == 10.0
    assert reply.metric_records[slot_record(METRICS_RECORD, 3)]["value"] == 13.0
    failures = [
        SlotFailure.from_record(reply.config_records[slot_record(FAILURE_RECORD, slot)])
        for slot in (1, 2)
    ]
    assert failures == [
        SlotFailure("<class 'ValueError'>:<'broken client'>", late=False),
        SlotFailure("straggler", late=True),
    ]
