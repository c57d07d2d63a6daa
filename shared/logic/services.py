"""The ports a piece of logic uses, built once per process from the settings."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from shared.dal.builds import BuildStore
from shared.dal.events import EventLog
from shared.dal.files import FileStore
from shared.dal.tasks import TaskStore
from shared.dal.workflow import Workflow
from shared.providers.base import AIProvider
from shared.settings import Settings, get_settings


@dataclass
class Services:
    settings: Settings
    _endpoints: dict[str, bool] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @cached_property
    def builds(self) -> BuildStore:
        return BuildStore(self.settings.builds_table)

    @cached_property
    def tasks(self) -> TaskStore:
        return TaskStore(self.settings.tasks_table)

    @cached_property
    def events(self) -> EventLog:
        return EventLog(self.settings.events_table, notify=self.has_webhook)

    def has_webhook(self, build_id: str) -> bool:
        """Whether the build's events go out as webhooks (its own URL, or the deployment default).
        A build's URL never changes, so the answer is kept for the life of the process."""
        if self.settings.webhook_url:
            return True
        with self._lock:
            known = self._endpoints.get(build_id)
        if known is None:
            known = bool((self.builds.get(build_id, attributes=["webhookUrl"]) or {}).get("webhookUrl"))
            with self._lock:
                if len(self._endpoints) > 10_000:
                    self._endpoints.clear()
                self._endpoints[build_id] = known
        return known

    @cached_property
    def files(self) -> FileStore:
        return FileStore(self.settings.files_bucket)

    @cached_property
    def workflow(self) -> Workflow:
        return Workflow(self.settings.state_machine_arn)

    @cached_property
    def provider(self) -> AIProvider:
        from shared.providers.factory import get_provider

        return get_provider(self.settings)


@lru_cache(maxsize=1)
def services() -> Services:
    return Services(get_settings())


def reset_services() -> None:
    services.cache_clear()
