"""Deliver one recorded event to its build's webhook, with retries through the queue.

The message is the events table's stream record (the outbox, relayed by an EventBridge Pipe on AWS
and by the local runtime's stream relay). A 2xx marks the event delivered. A retryable failure
hides the message for an exponential, jittered backoff and fails it, so SQS redelivers it; after
WEBHOOK_MAX_ATTEMPTS receives SQS moves it to the DLQ. 410 stops retries. A URL refused by the SSRF
guard is dead-lettered at once with the reason.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from shared.dal.events import event_from_stream_image
from shared.dal.queues import send_dead_letter, set_visibility
from shared.logic.services import Services, services
from shared.models.events import Event
from shared.observability import count, logger
from shared.signing import parse_secret_list
from shared.webhooks.delivery import (
    DEFAULT_BURST,
    DEFAULT_RATE_PER_SECOND,
    DeliveryOutcome,
    EndpointRateLimiter,
    deliver,
    delivery_delay_s,
    tls_context,
)

_limiter = EndpointRateLimiter(rate_per_s=DEFAULT_RATE_PER_SECOND, burst=DEFAULT_BURST)


class RetryLater(Exception):
    """The delivery should be tried again after the message's visibility timeout."""


@dataclass
class Received:
    body: str
    receipt_handle: str
    receive_count: int
    queue_url: str


def event_from_stream_record(body: str) -> Event | None:
    record = json.loads(body)
    if record.get("eventName") not in (None, "INSERT"):
        return None
    image = (record.get("dynamodb") or {}).get("NewImage")
    if not image:
        return None
    return event_from_stream_image(image)


def webhook_secrets(svc: Services) -> list[str]:
    raw = svc.settings.webhook_secret
    if svc.settings.webhook_secret_arn:
        from aws_lambda_powertools.utilities import parameters

        raw = parameters.get_secret(svc.settings.webhook_secret_arn, max_age=300)
    if not raw:
        raise ValueError("no webhook signing secret: set WEBHOOK_SECRET (or WEBHOOK_SECRET_ARN)")
    return parse_secret_list(str(raw))


def warm(svc: Services | None = None) -> None:
    """Do a consumer's first-delivery work now (the signing secret read, the HTTP client and TLS
    context loaded), so the first events of a build do not queue behind it."""
    svc = svc or services()
    webhook_secrets(svc)
    tls_context()


def _mark(svc: Services, event: Event, state: str, reason: str | None = None) -> None:
    svc.events.mark_delivery(event.buildId, event.seq, state, reason, svc.clock.now_ms())


def handle(msg: Received, dlq_url: str | None = None, svc: Services | None = None) -> None:
    svc = svc or services()
    event = event_from_stream_record(msg.body)
    if event is None:
        return
    url = svc.webhook_url(event.buildId)
    if not url:
        _mark(svc, event, "no_endpoint")
        return
    body = json.dumps(event.model_dump(mode="json"), separators=(",", ":")).encode()
    result = deliver(body, event.id, url, webhook_secrets(svc), svc.settings, rate_limiter=_limiter)
    if result.outcome == DeliveryOutcome.delivered:
        count("webhook.delivered")
        _mark(svc, event, "delivered")
        return
    if result.outcome == DeliveryOutcome.gone:
        count("webhook.gone")
        _mark(svc, event, "gone", result.reason)
        return
    if result.outcome == DeliveryOutcome.refused:
        count("webhook.refused")
        _dead_letter(svc, msg, event, dlq_url, result.reason or "refused")
        return
    count("webhook.retry")
    if msg.receive_count >= svc.settings.webhook_max_attempts:
        # Visible again at once, so SQS moves it to the DLQ on the next receive; record that now
        # so clients waiting for delivery know.
        _mark(svc, event, "dead", result.reason)
        count("webhook.dead_lettered")
        _retry_after(msg, 0, event)
        raise RetryLater(f"last attempt failed: {result.reason}")
    delay = delivery_delay_s(
        msg.receive_count,
        svc.settings.webhook_backoff_base_seconds,
        svc.settings.webhook_backoff_max_seconds,
        result.retry_after_s,
    )
    _retry_after(msg, delay, event)
    raise RetryLater(f"attempt {msg.receive_count} failed: {result.reason}")


def _retry_after(msg: Received, delay_s: float, event: Event) -> None:
    """Hide the message for the backoff (SQS allows up to 12 h), so retries reach hours on AWS."""
    try:
        set_visibility(msg.queue_url, msg.receipt_handle, delay_s)
    except Exception:  # the queue's default visibility timeout still brings it back
        logger.warning("could not set the webhook retry delay", extra={"eventId": event.id})


def _dead_letter(svc: Services, msg: Received, event: Event, dlq_url: str | None, reason: str) -> None:
    _mark(svc, event, "dead", reason)
    if dlq_url:
        send_dead_letter(dlq_url, msg.body, reason)
    else:
        logger.error("webhook refused and no DLQ configured", extra={"eventId": event.id, "reason": reason})


def delivery_summary(build_id: str, svc: Services | None = None) -> dict[str, int]:
    """How many of a build's events are delivered, dead, waiting (for `stepwise build --webhook`)."""
    svc = svc or services()
    return svc.events.delivery_counts(build_id)
