"""The ports a piece of logic uses, built once per process from the settings."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from shared.clock import SYSTEM_CLOCK, Clock
from shared.dal.builds import BuildStore
from shared.dal.cache import ResultCache
from shared.dal.events import EventLog
from shared.dal.file_index import FileIndex
from shared.dal.files import FileStore
from shared.dal.tasks import TaskStore
from shared.dal.workflow import Workflow
from shared.models.records import BuildRecord
from shared.providers.base import AIProvider
from shared.settings import Settings, get_settings


@dataclass
class Services:
    settings: Settings
    clock: Clock = SYSTEM_CLOCK  # what the logic reads the time from (tests move it on)
    _webhook_urls: dict[str, str | None] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @cached_property
    def builds(self) -> BuildStore:
        return BuildStore(self.settings.builds_table)

    @cached_property
    def tasks(self) -> TaskStore:
        return TaskStore(self.settings.tasks_table, self.settings.record_ttl_seconds)

    @cached_property
    def events(self) -> EventLog:
        return EventLog(
            self.settings.events_table,
            notify=self.has_webhook,
            ttl_seconds=self.settings.record_ttl_seconds,
            clock=self.clock,
        )

    def webhook_url(self, build_id: str, *, build: BuildRecord | None = None) -> str | None:
        """Where the build's events are delivered: its own URL, else the deployment default, else
        nowhere. A build's URL never changes, so the answer is kept for the life of the process.
        `build`: the build as the caller has just read it whole (then nothing is read)."""
        with self._lock:
            if build_id in self._webhook_urls:
                return self._webhook_urls[build_id]
        if build is None:
            build = self.builds.get(build_id, attributes=["webhookUrl"])
        url = (build.webhookUrl if build else None) or self.settings.webhook_url
        with self._lock:
            if len(self._webhook_urls) > 10_000:
                self._webhook_urls.clear()
            self._webhook_urls[build_id] = url
        return url

    def has_webhook(self, build_id: str) -> bool:
        """Whether the build's events go out as webhooks (its own URL, or the deployment default)."""
        return bool(self.settings.webhook_url) or bool(self.webhook_url(build_id))

    @cached_property
    def cache(self) -> ResultCache:
        return ResultCache(self.settings.cache_table)

    @cached_property
    def files(self) -> FileStore:
        return FileStore(self.settings.files_bucket)

    @cached_property
    def file_index(self) -> FileIndex:
        return FileIndex(self.settings.tasks_table, self.settings.record_ttl_seconds)

    @cached_property
    def workflow(self) -> Workflow:
        return Workflow(self.settings.state_machine_arn)

    @cached_property
    def provider(self) -> AIProvider:
        from shared.providers.factory import get_provider

        return get_provider(self.settings)


_clock: Clock = SYSTEM_CLOCK


@lru_cache(maxsize=1)
def services() -> Services:
    return Services(get_settings(), clock=_clock)


def reset_services() -> None:
    services.cache_clear()


def use_clock(clock: Clock | None) -> None:
    """The clock this process's services read from now on (None: the system's). The local runtime
    passes a test's clock here; on Lambda nothing does."""
    global _clock
    _clock = clock or SYSTEM_CLOCK
    reset_services()
