"""The local runtime's resources with no pollers, for tests that are the event source themselves:
they hand the handlers real SQS / Step Functions events and inspect the tables and queues."""

from __future__ import annotations

import uuid
from typing import Any

from local.context import LocalContext
from local.runtime import LocalRuntime, function_context, load_handler
from shared.dal.aws import client
from shared.ids import new_build_id, new_plan_id, now_ms
from shared.logic.services import services
from shared.models.plan import Task
from tests.helpers import drain_queue


class QuietRuntime(LocalRuntime):
    """The local runtime's resources and environment, with no pollers: the test is the event source."""

    def _start_workers(self) -> None:
        pass


def lambda_context(name: str, timeout_s: float | None = None) -> LocalContext:
    """The context function `name` gets, with its deployed timeout unless `timeout_s` is given."""
    return function_context(name, timeout_s)


def new_build(
    tasks: list[dict[str, Any]] | None = None,
    *,
    status: str = "executing",
    max_concurrency: int = 5,
    prompt: str | None = None,
) -> str:
    """A build item as the API and the plan step leave it (with its plan stored when given).
    Its prompt is its own unless given, so no test is served another test's cached task result."""
    svc = services()
    build_id = new_build_id()
    item: dict[str, Any] = {
        "buildId": build_id,
        "ownerId": f"user-{uuid.uuid4().hex[:8]}",
        "status": status,
        "prompt": prompt or f"Create a landing page with a hero section ({build_id})",
        "requireApproval": False,
        "maxConcurrency": max_concurrency,
        "createdAt": now_ms(),
        "updatedAt": now_ms(),
    }
    if tasks is not None:
        plan_id = new_plan_id()
        svc.tasks.put_plan(build_id, plan_id, [Task.model_validate(t) for t in tasks])
        item.update(planId=plan_id, taskCount=len(tasks))
    svc.builds.create(item)
    return build_id


def execute(quiet: QuietRuntime, build_id: str) -> None:
    """Step Functions' Execute state: the dispatcher starts the build (its roots reach the tasks
    queue, emptied first so a test sees only this build's)."""
    drain_queue(client("sqs"), quiet.resources.queues["tasks"])
    event = {"action": "execute", "buildId": build_id, "taskToken": "token-1"}
    assert load_handler("dispatch")(event, lambda_context("dispatch")) == {"started": True}


def executing(quiet: QuietRuntime, tasks: list[dict[str, Any]], **build: Any) -> str:
    """A build whose plan is stored and whose dispatcher has started it."""
    build_id = new_build(tasks, **build)
    execute(quiet, build_id)
    return build_id
