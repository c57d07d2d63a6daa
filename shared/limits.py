"""The time and memory limits of the deployed functions and queues, written once.

`infra/` deploys them, the local runtime runs with them (its queues' visibility scaled by one factor,
LOCAL_VISIBILITY_SCALE, never by a literal of its own) and the engine reasons with them: how long a task message
stays invisible while its work runs, when an attempt nobody finished is surely dead, and how many
tasks one invocation may hold in memory at once.
"""

from __future__ import annotations

import math

# --- functions -------------------------------------------------------------------------------------
FUNCTION_MEMORY_MB: dict[str, int] = {"api": 512, "plan": 1024, "dispatch": 512, "task": 1024, "webhook": 256}
# Webhook deliveries run one after another in a batch, each bounded by WEBHOOK_DELIVERY_TIMEOUT_S, so
# the function's timeout covers a whole batch of slow receivers plus signing, DNS and the SSRF check:
# one slow receiver can never time out the batch and spend the other events' receives.
WEBHOOK_DELIVERY_TIMEOUT_S = 10.0
WEBHOOK_BATCH_SIZE = 4
WEBHOOK_BATCH_MARGIN_S = 20
_FIXED_TIMEOUTS_S: dict[str, int] = {
    "api": 29,
    "plan": 300,
    "dispatch": 60,
    "webhook": int(WEBHOOK_BATCH_SIZE * WEBHOOK_DELIVERY_TIMEOUT_S + WEBHOOK_BATCH_MARGIN_S),
}
# The task handler enforces TASK_TIMEOUT_SECONDS itself; the function's margin beyond it lets the
# handler record the timeout (and a handoff finish its commit).
TASK_FUNCTION_MARGIN_S = 60
LAMBDA_MAX_TIMEOUT_S = 900


def function_timeout_s(name: str, task_timeout_s: float) -> int:
    """The function's time limit: what Lambda kills it at."""
    if name == "task":
        return min(LAMBDA_MAX_TIMEOUT_S, math.ceil(task_timeout_s) + TASK_FUNCTION_MARGIN_S)
    return _FIXED_TIMEOUTS_S[name]


def function_timeouts_s(task_timeout_s: float) -> dict[str, int]:
    return {name: function_timeout_s(name, task_timeout_s) for name in FUNCTION_MEMORY_MB}


# --- queues ----------------------------------------------------------------------------------------
# Visibility timeouts are 6x the consuming function's timeout (the Lambda guidance for SQS event
# sources), so a batch that is still running is never handed to a second consumer.
VISIBILITY_FACTOR = 6
# AWS suggests at least 5 for an SQS event source: a receive is also spent when a batch is
# throttled or a worker dies mid-task, not only when a task's code fails.
TASKS_DLQ_MAX_RECEIVES = 5
# A dispatcher record that fails comes back soon, then later: the dispatcher makes it invisible for
# DISPATCH_RETRY_BASE_S * 2**(receives-1) (half to all of it, at most the queue's own visibility)
# instead of the queue's whole visibility (360 s), and the queue allows it more receives: its first
# retry is 5-10 s after the failure, and it reaches its dead-letter queue only after 15-30 minutes of
# failures, as with 5 receives of 360 s each.
TASK_FINISHED_DLQ_MAX_RECEIVES = 10
DISPATCH_RETRY_BASE_S = 10


# The local runtime stops a handler at its function's time limit itself, so a message there needs to
# stay invisible for no more than that one limit: its queues run with the deployed visibility times
# this one factor (the consumer's own timeout). A failing dispatcher record holds its build back 60 s
# locally, not the deployed 360 s; nothing still running is ever handed to a second consumer.
LOCAL_VISIBILITY_SCALE = 1 / VISIBILITY_FACTOR


# --- a task message while its work runs ------------------------------------------------------------
# The consumer keeps its message invisible for a lease it renews while the work (its task and the
# dependents handed to it) runs; if the consumer dies, the message is back within one lease instead
# of the queue's whole visibility timeout.
def task_lease_s(task_timeout_s: float) -> int:
    return max(1, math.ceil(task_timeout_s / 2))


# An attempt is never run longer than TASK_TIMEOUT_SECONDS; one started longer ago than this and not
# settled has no live worker (the margin, half a timeout and at least 5 s, covers the commit that
# settles it): 90 s with the default 60 s.
def stale_after_s(task_timeout_s: float) -> float:
    return task_timeout_s + max(5.0, task_timeout_s / 2)


def crash_recovery_bound_s(task_timeout_s: float) -> float:
    """The longest a dead consumer's attempts wait before another consumer runs them: its message
    reappears within one lease; if the attempt may still be running then, it comes back when the
    attempt is surely dead."""
    return max(float(task_lease_s(task_timeout_s)), stale_after_s(task_timeout_s)) + COME_BACK_SLACK_S


# A message sent away to come back later is made invisible in whole seconds, rounded up, plus one
# for the clocks of two hosts (`attempts.claim.ComeBackLater`).
COME_BACK_SLACK_S = 2


# --- memory ----------------------------------------------------------------------------------------
# A running task holds its context (its dependencies' files), the provider's reply and its files:
# budgeted at MEMORY_PER_TASK_MB each, beside the runtime's own BASE_MEMORY_MB. The handoff runs at
# most this many tasks at once in one invocation; more go to the queue.
BASE_MEMORY_MB = 256
MEMORY_PER_TASK_MB = 96


def concurrent_tasks(memory_mb: int) -> int:
    """How many tasks one invocation with `memory_mb` may run side by side (at least one)."""
    return max(1, (int(memory_mb) - BASE_MEMORY_MB) // MEMORY_PER_TASK_MB)
