"""The result cache: a task's outputs keyed by everything it saw, served to an identical attempt."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from shared.constants import TTL_ATTRIBUTE
from shared.logic.services import Services
from shared.models.plan import Task, Usage
from shared.providers.base import GeneratedFile, TaskContext, TransformResult
from shared.providers.prompts import TEMPLATES_VERSION


def key_of(svc: Services, task: Task, context: TaskContext) -> str | None:
    if svc.settings.task_cache_ttl_seconds <= 0:
        return None
    material = json.dumps(
        {
            "type": task.type.value,
            "input": task.input.model_dump(mode="json", exclude={"dependencies"}),
            "name": task.name,
            "description": task.description,
            "framework": context.framework,
            "prompt": context.build_prompt,
            "files": sorted((p, hashlib.sha256(c.encode()).hexdigest()) for p, c in context.files.items()),
            "provider": svc.provider.identity(),
            "templates": TEMPLATES_VERSION,  # editing a prompt template must not serve old outputs
        },
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()


def lookup(svc: Services, key: str | None) -> TransformResult | None:
    if not key:
        return None
    data = svc.cache.get(key)  # a failed read is a miss: the cache never fails a task
    if not data:
        return None
    return result_of(svc, data)


def result_of(svc: Services, data: dict[str, Any] | None) -> TransformResult | None:
    """What a cache item holds, unless it expired (DynamoDB's TTL deletes late)."""
    if not data:
        return None
    if int(data.get(TTL_ATTRIBUTE, 0)) < svc.clock.time():  # DynamoDB's TTL deletes late: check it here
        return None
    return TransformResult(files=[GeneratedFile(**f) for f in data["files"]], usage=Usage())


def entry(svc: Services, key: str, result: TransformResult) -> list[dict[str, Any]]:
    """The transaction entry writing the result's cache item, which commits with the completion
    (none for a result too big to cache)."""
    body = [{"path": f.path, "content": f.content} for f in result.files]
    if len(json.dumps(body)) > 96 * 1024:
        return []  # kept well under DynamoDB's item limit: a bigger result is simply not cached
    ttl = min(svc.settings.task_cache_ttl_seconds, svc.settings.record_ttl_seconds)
    return [svc.cache.tx_put(key, body, int(svc.clock.time()) + ttl)]
