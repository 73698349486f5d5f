"""The topology's promises that decide whether a message can be lost (RABBITMQ.md)."""

from __future__ import annotations

import pytest

from shared import messages as m
from shared.bus import topology as t
from shared.bus.errors import PermanentError, TransientError, is_permanent


def test_work_queues_dead_letter_at_least_once_into_their_dead_queue() -> None:
    args = t.work_queue_arguments(t.ACTIVATION)
    assert args["x-queue-type"] == "quorum"
    assert args["x-dead-letter-exchange"] == ""
    assert args["x-dead-letter-routing-key"] == "activation.dead"
    # at-least-once silently falls back to at-most-once without reject-publish.
    assert args["x-dead-letter-strategy"] == "at-least-once"
    assert args["x-overflow"] == "reject-publish"
    assert args["x-delivery-limit"] == t.DELIVERY_LIMIT > 0


def test_retry_and_dead_queue_names() -> None:
    assert t.REGISTRATION.retry(5000) == "registration.retry.5000ms"
    assert t.ACTIVATION.dead == "activation.dead"
    assert t.queue_by_name("whatsapp") is t.WHATSAPP
    with pytest.raises(KeyError):
        t.queue_by_name("activation.dead")


def test_every_routing_key_is_consumed_by_one_work_queue_at_most() -> None:
    keys = [key for queue in t.WORK_QUEUES for key in queue.routing_keys]
    assert len(keys) == len(set(keys))


class NotRetryable(Exception):
    retryable = False


class Retryable(Exception):
    retryable = True


@pytest.mark.parametrize(
    ("exc", "permanent"),
    [
        (PermanentError("bad input"), True),
        (NotRetryable("HTTP 422"), True),
        (TransientError("down"), False),
        (Retryable("HTTP 503"), False),
        (RuntimeError("bug"), False),
        (TimeoutError(), False),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, BaseException) else str(v),
)
def test_is_permanent(exc: BaseException, permanent: bool) -> None:
    assert is_permanent(exc) is permanent


def test_messages_a_worker_must_handle_are_mandatory_and_notifications_are_not() -> None:
    for queue in t.WORK_QUEUES:
        for key in queue.routing_keys:
            assert t.requires_consumer(key)
    # Only the onboarding pages listen to these; no open page is not a failure.
    assert not t.requires_consumer(m.QrIssued.ROUTING_KEY)
    assert not t.requires_consumer(m.ActivationCompleted.ROUTING_KEY)
