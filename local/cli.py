"""The `stepwise` command: run a build on the local runtime, serve the API, inspect dead letters."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.table import Table

from shared.settings import ConfigurationError

app = typer.Typer(
    help="Stepwise: transparent, modular AI builds, run locally on moto.", no_args_is_help=True, add_completion=False
)
dlq_app = typer.Typer(help="Inspect and resend dead webhook deliveries.", no_args_is_help=True)
app.add_typer(dlq_app, name="dlq")

TERMINAL = {"build_completed", "build_failed", "build_cancelled"}


# Where `build` and `serve` run moto (the local AWS services): "process", a process of its own (a
# second core for the runtime), or "inline", in the runtime's process (docs/cli.md).
_Backends = Annotated[
    str,
    typer.Option(
        "--backends",
        envvar="STEPWISE_LOCAL_BACKENDS",
        help="Where moto (the local AWS services) runs: process (its own, a second core) | inline.",
    ),
]
DEFAULT_BACKENDS = "process"


def _fail_usage(err: Console, message: str) -> None:
    err.print(f"[red]error:[/] {message}")
    raise typer.Exit(2)


def _first_user() -> tuple[str, str]:
    from shared.settings import get_settings

    token, user = next(iter(get_settings().tokens.items()))
    return token, user


@app.command()
def build(
    prompt: Annotated[str, typer.Argument(help="What to build, in plain words.")],
    out: Annotated[Path, typer.Option("--out", help="Folder the generated files are written to.")] = Path(
        "stepwise-out"
    ),
    framework: Annotated[str | None, typer.Option(help="Framework hint, e.g. react or vue.")] = None,
    provider: Annotated[
        str | None, typer.Option(help="mock | anthropic | openai | bedrock (default: AI_PROVIDER or mock)")
    ] = None,
    mock_script: Annotated[
        Path | None, typer.Option("--mock-script", help="Mock provider script (docs/mock-provider.md).")
    ] = None,
    require_approval: Annotated[bool, typer.Option("--require-approval", help="Pause for plan approval.")] = False,
    auto_approve: Annotated[bool, typer.Option("--auto-approve", help="Approve the plan automatically.")] = False,
    webhook: Annotated[str | None, typer.Option("--webhook", help="POST every event, signed, to this URL.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the event stream as JSON lines on stdout.")] = False,
    drain_timeout: Annotated[float, typer.Option(help="With --webhook: seconds to wait for delivery.")] = 60.0,
    max_concurrency: Annotated[int, typer.Option(help="Tasks run at once (1-20).")] = 5,
    budget_usd: Annotated[float | None, typer.Option("--budget-usd", help="Stop starting tasks at this cost.")] = None,
    backends: _Backends = DEFAULT_BACKENDS,
) -> None:
    """Run one build end to end on the local runtime and write its files to --out."""
    err = Console(stderr=True)
    human = Console(stderr=json_out)
    if provider and provider not in ("mock", "anthropic", "openai", "bedrock"):
        _fail_usage(err, f"--provider must be mock, anthropic, openai or bedrock, not {provider!r}")
    if mock_script and not mock_script.is_file():
        _fail_usage(err, f"--mock-script {mock_script} is not a file")
    env: dict[str, str] = {}
    if provider:
        env["AI_PROVIDER"] = provider
    if mock_script:
        env["STEPWISE_MOCK_SCRIPT"] = str(mock_script.resolve())
    if webhook:
        host = (urlsplit(webhook).hostname or "").lower()
        if not host:
            _fail_usage(err, f"--webhook {webhook!r} is not a URL")
        allowed = {h for h in os.environ.get("WEBHOOK_ALLOWED_HOSTS", "").split(",") if h}
        if host not in allowed:
            allowed.add(host)
            err.print(f"[dim]allowing webhook host {host} for this local run (you named it)[/]")
        env["WEBHOOK_ALLOWED_HOSTS"] = ",".join(sorted(allowed))

    from local.progress import BuildProgress
    from local.runtime import LocalRuntime

    started = time.monotonic()
    try:
        runtime = LocalRuntime(env=env, backends=backends)
        with err.status("Starting the local runtime (moto: DynamoDB, SQS, S3, Step Functions)…"):
            runtime.start()
    except ConfigurationError as exc:
        _fail_usage(err, str(exc))
    status = "failed"
    try:
        _, user = _first_user()
        body: dict[str, Any] = {"prompt": prompt, "maxConcurrency": max_concurrency}
        if framework:
            body["framework"] = framework
        if require_approval:
            body["requireApproval"] = True
        if webhook:
            body["webhookUrl"] = webhook
        if budget_usd is not None:
            body["budgetUsd"] = budget_usd
        code, created = runtime.invoke_api("POST", "/builds", user=user, body=body)
        if code != 202:
            message = (created or {}).get("error", {}).get("message", created)
            _fail_usage(err, f"the build was refused ({code}): {message}")
        build_id = created["buildId"]
        if webhook:
            err.print(f"[dim]webhooks signed with secret {runtime.webhook_secret}[/]")
        view = BuildProgress(human, build_id, prompt, show=not json_out, plan_loader=lambda: _plan(runtime, user, build_id))
        try:
            status = _follow(runtime, user, build_id, view, json_out=json_out, auto_approve=auto_approve, err=err)
        except KeyboardInterrupt:
            runtime.invoke_api("POST", f"/builds/{build_id}/cancel", user=user)
            err.print("[yellow]cancelled[/]")
            status = "cancelled"
        written = _write_files(runtime, user, build_id, out)
        if webhook:
            _drain(build_id, drain_timeout, err)
        code, final = runtime.invoke_api("GET", f"/builds/{build_id}", user=user)
        view.summary(final, written, out, time.monotonic() - started)
    finally:
        runtime.stop()
    raise typer.Exit(0 if status == "completed" else 1)


def _follow(
    runtime: Any, user: str, build_id: str, view: Any, *, json_out: bool, auto_approve: bool, err: Console
) -> str:
    from shared.logic.services import services

    after, status = 0, "failed"
    events = services().events
    with view.live():
        while True:
            batch, _ = events.read(build_id, after=after, limit=500)
            for event in batch:
                after = event.seq
                if json_out:
                    sys.stdout.write(json.dumps(event.model_dump(mode="json"), separators=(",", ":")) + "\n")
                    sys.stdout.flush()
                view.on_event(event)
                if event.type == "plan_approval_required":
                    _approve(runtime, user, build_id, auto_approve, view, err)
                if event.type in TERMINAL:
                    if event.type == "build_completed":
                        status = str(event.data["status"])
                    else:
                        status = "cancelled" if event.type == "build_cancelled" else "failed"
                    return status
            if not batch:
                view.tick()
                time.sleep(0.02)


def _plan(runtime: Any, user: str, build_id: str) -> list[dict[str, Any]]:
    """The whole plan's tasks, for a `plan_generated` that carries only a prefix (`truncated`)."""
    code, build = runtime.invoke_api("GET", f"/builds/{build_id}", user=user)
    return list(((build or {}).get("plan") or {}).get("tasks") or []) if code == 200 else []


def _approve(runtime: Any, user: str, build_id: str, auto: bool, view: Any, err: Console) -> None:
    if not auto:
        if not sys.stdin.isatty():
            err.print(f"[yellow]waiting for approval:[/] POST /builds/{build_id}/approval (or run with --auto-approve)")
            return
        with view.paused():
            answer = typer.confirm("Approve this plan?", default=True, err=True)
        if not answer:
            runtime.invoke_api(
                "POST",
                f"/builds/{build_id}/approval",
                user=user,
                body={"approved": False, "reason": "rejected at the prompt"},
            )
            return
    runtime.invoke_api("POST", f"/builds/{build_id}/approval", user=user, body={"approved": True})


def _write_files(runtime: Any, user: str, build_id: str, out: Path) -> list[tuple[str, int]]:
    from shared.models.plan import UnsafePathError, safe_relative_path

    code, files = runtime.invoke_api("GET", f"/builds/{build_id}/files", user=user)
    if code != 200 or not files:
        return []
    root = out.resolve()
    written: list[tuple[str, int]] = []
    for f in files:
        try:
            rel = safe_relative_path(f["path"])
        except UnsafePathError:
            continue
        target = (root / rel).resolve()
        if not target.is_relative_to(root):
            continue
        code, content = runtime.invoke_api("GET", f"/builds/{build_id}/files/{rel}", user=user, raw=True)
        if code != 200:
            continue
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(content)
        written.append((rel, int(f["size"])))
    return written


def _drain(build_id: str, timeout_s: float, err: Console) -> None:
    from shared.logic.webhooks import delivery_summary

    deadline = time.monotonic() + timeout_s
    counts: dict[str, int] = {}
    with err.status("Delivering webhooks…"):
        while time.monotonic() < deadline:
            counts = delivery_summary(build_id)
            if not counts.get("pending"):
                break
            time.sleep(0.1)
    delivered = counts.get("delivered", 0)
    dead = counts.get("dead", 0) + counts.get("gone", 0)
    pending = counts.get("pending", 0)
    err.print(
        f"webhooks: {delivered} delivered, {dead} dead-lettered"
        + (f", [red]{pending} still pending after {timeout_s:.0f}s[/]" if pending else "")
    )


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 8000,
    aws_port: Annotated[int, typer.Option(help="Port of the local AWS endpoint (moto), for `stepwise dlq`.")] = 0,
    backends: _Backends = DEFAULT_BACKENDS,
) -> None:
    """Serve the HTTP API (with its workers) on the local runtime."""
    import uvicorn

    from local.dlq import state_file, write_state
    from local.runtime import LocalRuntime
    from local.server import app as asgi_app
    from local.static import is_built

    err = Console(stderr=True)
    try:
        runtime = LocalRuntime(aws_port=aws_port or _free_port(), backends=backends)
        runtime.start()
    except ConfigurationError as exc:
        _fail_usage(err, str(exc))
    token, user = _first_user()
    write_state({"api": f"http://{host}:{port}", "endpoint": runtime.aws_endpoint, "pid": os.getpid()})
    try:
        config = uvicorn.Config(asgi_app, host=host, port=port, log_level="warning", lifespan="on")
        server = uvicorn.Server(config)
        out = Console()
        out.print(f"Stepwise API on [bold]http://{host}:{port}[/]  (dev token: [bold]{token}[/] for user {user})")
        out.print(f"  dashboard: [bold]{dashboard_url(host, port, token)}[/]", soft_wrap=True)
        if not is_built():
            out.print(
                "  (the dashboard is not built: `bash scripts/serve.sh` builds it, or npm --prefix web ci && npm --prefix web run build)"
            )
        out.print(f'  curl -H "Authorization: Bearer {token}" http://{host}:{port}/builds')
        out.print(f"  local AWS endpoint (moto) for `stepwise dlq`: {runtime.aws_endpoint}")
        sys.stdout.flush()
        server.run()
    finally:
        state_file().unlink(missing_ok=True)
        runtime.stop()


def dashboard_url(host: str, port: int, token: str) -> str:
    """The address that opens the dashboard signed in (the app drops the token from the address bar)."""
    from urllib.parse import quote

    shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
    return f"http://{shown}:{port}/?token={quote(token, safe='')}"


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_Stack = Annotated[str | None, typer.Option("--stack", help="A deployed Stepwise stack (CloudFormation name).")]
_QueueUrl = Annotated[str | None, typer.Option("--queue-url", help="The webhook DLQ's URL.")]
_Endpoint = Annotated[str | None, typer.Option("--endpoint", help="AWS endpoint (default: the running serve).")]
_Region = Annotated[str | None, typer.Option("--region", help="AWS region.")]


def _dlq_target(stack: str | None, queue_url: str | None, endpoint: str | None, region: str | None) -> Any:
    from local.dlq import resolve

    try:
        return resolve(stack=stack, queue_url=queue_url, endpoint=endpoint, region=region)
    except LookupError as exc:
        Console(stderr=True).print(f"[red]error:[/] {exc}")
        raise typer.Exit(2) from None


@dlq_app.command("list")
def dlq_list(
    stack: _Stack = None,
    queue_url: _QueueUrl = None,
    endpoint: _Endpoint = None,
    region: _Region = None,
    json_out: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """List dead webhook deliveries (a deployed stack, a queue URL, or the running `stepwise serve`)."""
    from local.dlq import list_dead

    target = _dlq_target(stack, queue_url, endpoint, region)
    dead = list_dead(target)
    if json_out:
        for d in dead:
            sys.stdout.write(json.dumps(d.__dict__) + "\n")
        return
    table = Table(title=f"{len(dead)} dead webhook deliveries in {target.dlq_url}")
    for col in ("event", "type", "build", "seq", "reason"):
        table.add_column(col)
    for d in dead:
        table.add_row(d.event_id, d.event_type, d.build_id, str(d.seq or ""), d.reason or "retries exhausted")
    Console().print(table)


@dlq_app.command("redrive")
def dlq_redrive(
    stack: _Stack = None,
    queue_url: _QueueUrl = None,
    endpoint: _Endpoint = None,
    region: _Region = None,
    limit: Annotated[int | None, typer.Option(help="At most this many.")] = None,
) -> None:
    """Send dead webhook deliveries again (each gets a full set of attempts)."""
    from local.dlq import redrive

    target = _dlq_target(stack, queue_url, endpoint, region)
    moved = redrive(target, limit)
    Console().print(f"redrove {moved} deliveries to {target.source_url}")


def main() -> None:  # pragma: no cover
    app()
