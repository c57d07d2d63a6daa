"""What `stepwise build` shows: the plan as it streams, a live bar per task, then a summary."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.live import Live
from rich.progress import BarColumn, Progress, TaskID, TextColumn
from rich.table import Table

from shared.models.events import Event

_ICONS = {
    "pending": "[dim]·[/]",
    "queued": "[dim]…[/]",
    "running": "[cyan]▶[/]",
    "completed": "[green]✓[/]",
    "cached": "[green]↺[/]",
    "failed": "[red]✗[/]",
    "timeout": "[red]⏱[/]",
    "skipped": "[yellow]↷[/]",
    "retrying": "[yellow]↻[/]",
}


class BuildProgress:
    """`plan_loader` returns the whole plan's tasks (`GET /builds/{id}`): a big plan's `plan_generated`
    carries only a prefix of them (`truncated: true`)."""

    def __init__(
        self,
        console: Console,
        build_id: str,
        prompt: str,
        *,
        show: bool = True,
        plan_loader: Callable[[], list[dict[str, Any]]] | None = None,
    ) -> None:
        self.console = console
        self.plan_loader = plan_loader
        self.show = show
        self.build_id = build_id
        self.progress = Progress(
            TextColumn("{task.fields[icon]}"),
            TextColumn("{task.description}", style="bold"),
            BarColumn(bar_width=24),
            TextColumn("{task.fields[took]:>7}", style="dim"),
            TextColumn("{task.fields[note]}"),
            console=console,
            auto_refresh=False,
            expand=False,
        )
        self.rows: dict[str, TaskID] = {}
        self.started_at: dict[str, float] = {}
        self.estimate: dict[str, float] = {}
        self._live: Live | None = None
        if show:
            console.print(f"[bold]Stepwise[/] · build [cyan]{build_id}[/]")
            console.print(f"[dim]prompt:[/] {prompt[:200]}")
            console.print("[bold]Planning…[/]")

    @contextmanager
    def live(self) -> Iterator[None]:
        if not self.show:
            yield
            return
        with Live(self.progress, console=self.console, refresh_per_second=12, transient=False) as live:
            self._live = live
            try:
                yield
            finally:
                self.tick()
                self._live = None

    @contextmanager
    def paused(self) -> Iterator[None]:
        if self._live is None:
            with nullcontext():
                yield
            return
        self._live.stop()
        try:
            yield
        finally:
            self._live.start()

    def _say(self, text: str) -> None:
        if self.show:
            self.console.print(text)

    def on_event(self, e: Event) -> None:
        d = e.data
        t = e.type
        if t == "plan_partial":
            for task in d["latestTasks"]:
                self._say(f"  [cyan]+[/] {task['name']} [dim]({task['type']})[/]")
        elif t == "plan_warning":
            self._say(f"[yellow]⚠ {d['message']}[/]")
        elif t == "plan_blocked":
            self._say(f"[red]{d.get('message') or 'Plan blocked by circular dependencies.'}[/]")
            self._say(f"  cycles: {'; '.join(d['cycles'])}")
        elif t == "plan_generated":
            rec = f", recovery: {d['recovery']}" if d.get("recovery") else ""
            self._say(
                f"[bold]Plan:[/] {d['taskCount']} tasks, estimated {d['estimatedDuration']:.0f}s "
                f"on the critical path{rec}"
            )
            tasks = d["tasks"]
            if d.get("truncated") and self.plan_loader is not None:
                tasks = self.plan_loader()
            for task in tasks:
                self._row(task["id"], task["name"])
        elif t == "plan_approval_required":
            self._say("[yellow]The plan needs approval.[/]")
        elif t == "task_started":
            self._row(d["taskId"], d.get("taskName") or d["taskId"])  # may start before plan_generated
            self._set(d["taskId"], "running", f"attempt {d['attempt']}")
            self.started_at[d["taskId"]] = time.monotonic()
            if self.show and d["taskId"] in self.rows:
                self.progress.start_task(self.rows[d["taskId"]])
        elif t == "task_completed":
            files = ", ".join(d["files"][:3]) + (" …" if len(d["files"]) > 3 else "")
            self._set(
                d["taskId"],
                "cached" if d["cached"] else "completed",
                files,
                done=True,
                took=f"{d['durationMs'] / 1000:.2f}s",
            )
        elif t in ("task_failed", "task_timeout"):
            state = "retrying" if d["willRetry"] else ("timeout" if t == "task_timeout" else "failed")
            note = "will retry" if d["willRetry"] else d.get("error", "timed out")
            self._set(d["taskId"], state, str(note)[:60], done=not d["willRetry"])
        elif t == "task_skipped":
            self._set(d["taskId"], "skipped", f"needs {d['dependency']}", done=True)
        elif t == "build_failed":
            self._say(f"[red]Build failed ({d['reason']}):[/] {d['message']}")
        elif t == "build_cancelled":
            self._say(f"[yellow]Build cancelled:[/] {d['reason']}")
        self.tick()

    def _row(self, task_id: str, name: str) -> None:
        if self.show and task_id not in self.rows:
            self.rows[task_id] = self.progress.add_task(
                name[:48], total=100, start=False, icon=_ICONS["pending"], note="", took=""
            )

    def _set(self, task_id: str, state: str, note: str, *, done: bool = False, took: str = "") -> None:
        if not self.show or task_id not in self.rows:
            return
        row = self.rows[task_id]
        fields: dict[str, Any] = {"icon": _ICONS.get(state, "·"), "note": note, "took": took}
        if done:
            self.progress.update(row, completed=100, **fields)
            self.progress.stop_task(row)
        else:
            self.progress.update(row, **fields)

    def tick(self) -> None:
        """Bars of running tasks creep toward 90% of their time; completion fills them."""
        if not self.show:
            return
        for task_id, since in self.started_at.items():
            row = self.rows.get(task_id)
            if row is None or self.progress.tasks[row].finished:
                continue
            elapsed = time.monotonic() - since
            self.progress.update(row, completed=min(90.0, 90.0 * (1 - 1 / (1 + elapsed))))
        if self._live is not None:
            self._live.refresh()

    def summary(self, build: dict[str, Any], written: list[tuple[str, int]], out: Path, wall_s: float) -> None:
        if not isinstance(build, dict) or "metrics" not in build:
            return
        m = build["metrics"]
        status = build["status"]
        colour = {"completed": "green", "completed_with_errors": "yellow"}.get(status, "red")
        table = Table(show_header=False, box=None, padding=(0, 2))
        table.add_row("status", f"[{colour}]{status}[/]")
        table.add_row(
            "tasks",
            f"{m['completedTasks']}/{m['totalTasks']} completed, {m['failedTasks']} failed, "
            f"{m['skippedTasks']} skipped, {m['cachedTasks']} cached",
        )
        table.add_row("tokens", f"{m['promptTokens']:,} prompt + {m['completionTokens']:,} completion")
        cost = "unknown (model not priced)" if m.get("costUsd") is None else f"${m['costUsd']:.4f}"
        table.add_row("cost", cost)
        table.add_row("duration", f"{m['durationMs'] / 1000:.2f}s build, {wall_s:.2f}s wall")
        table.add_row("files", f"{len(written)} written to {out}")
        self.console.print(table)
        for path, size in written:
            self.console.print(f"  {path} [dim]({size:,} B)[/]")
