"""The ports a piece of logic uses, built once per process from the settings."""

from __future__ import annotations

from dataclasses import dataclass
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

    @cached_property
    def builds(self) -> BuildStore:
        return BuildStore(self.settings.builds_table)

    @cached_property
    def tasks(self) -> TaskStore:
        return TaskStore(self.settings.tasks_table)

    @cached_property
    def events(self) -> EventLog:
        return EventLog(self.settings.events_table)

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
