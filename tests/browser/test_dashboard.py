"""The dashboard in a real browser, as a person uses it: sign in with the address `stepwise serve`
prints, start a build from the form, watch the plan stream and the DAG fill in, approve an edited
plan, cancel, retry a task that failed for good, read a file; no serious accessibility violation."""

from __future__ import annotations

import io
import json
import re
import time
import zipfile
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Page, expect

from tests.browser.conftest import PLAN_TASKS, TOKEN, Server

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]

CRITICAL = re.compile(r"\bcritical\b")
TERMINAL = {"completed", "completed_with_errors", "failed", "cancelled", "timed_out"}


def open_page(page: Page, server: Server, route: str = "") -> None:
    page.goto(f"{server.base}/?token={TOKEN}{route}")


def poll(page: Page, predicate: str, timeout: float = 20) -> bool:
    """Whether `predicate` held within `timeout` s (page.wait_for_function would need 'unsafe-eval')."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if page.evaluate(predicate):
            return True
        time.sleep(0.02)
    return False


def node(page: Page, task_id: str) -> Any:
    return page.locator(f'.dag-node[data-task-id="{task_id}"]')


def build_status(page: Page) -> Any:
    return page.locator(".build")


def test_sign_in_then_start_from_the_form_and_see_tasks_while_the_plan_streams(page: Page, server: Server) -> None:
    open_page(page, server)
    expect(page.get_by_role("heading", name="Start a build")).to_be_visible()
    assert "token=" not in page.url, "the token stays out of the address bar"

    page.get_by_label("What should be built?").fill("A landing page, watched from the browser")
    page.get_by_label("Tasks at once").fill("3")
    page.get_by_role("button", name="Start build").click()
    expect(page).to_have_url(re.compile(r"#/builds/bld_"))

    # A task is drawn while the plan is still being written: a draft node (plan_partial only) while
    # the page still says "Planning…", i.e. before plan_generated.
    assert poll(
        page, "() => !!(document.querySelector('.dag-node.draft') && document.querySelector('[data-testid=planning]'))"
    )
    build_id = page.url.split("#/builds/")[1]
    events = server.events(build_id)
    first_partial = next(e["seq"] for e in events if e["type"] == "plan_partial")
    generated = [e["seq"] for e in events if e["type"] == "plan_generated"]
    assert not generated or generated[0] > first_partial

    # The build runs to its end: `flaky` fails for good and `page` (which needs it) is skipped.
    expect(build_status(page)).to_have_attribute("data-build-status", "completed_with_errors", timeout=30_000)
    for task_id in ("setup", "styles", "hero"):
        expect(node(page, task_id)).to_have_attribute("data-status", "completed")
    expect(node(page, "flaky")).to_have_attribute("data-status", "failed")
    expect(node(page, "page")).to_have_attribute("data-status", "skipped")
    # The critical path is marked (setup -> hero -> page is the longest by estimate).
    for task_id in ("setup", "hero", "page"):
        expect(node(page, task_id)).to_have_class(CRITICAL)
    expect(node(page, "styles")).not_to_have_class(CRITICAL)


def test_a_task_failing_for_good_is_retried_from_the_page_and_every_node_completes(page: Page, server: Server) -> None:
    build_id = server.early["retry"]
    server.wait_status(build_id, TERMINAL)
    open_page(page, server, f"#/builds/{build_id}")
    expect(build_status(page)).to_have_attribute("data-build-status", "completed_with_errors")

    node(page, "flaky").click()
    panel = page.locator("aside.task-panel")
    expect(panel.get_by_test_id("task-status")).to_contain_text("Failed")
    expect(panel.locator("table.attempts tbody tr")).to_have_count(3)
    expect(panel).to_contain_text("Error:")
    panel.get_by_role("button", name="Retry task").click()

    expect(build_status(page)).to_have_attribute("data-build-status", "completed", timeout=30_000)
    nodes = page.locator(".dag-node")
    expect(nodes).to_have_count(len(PLAN_TASKS))
    for task in PLAN_TASKS:
        expect(node(page, task["id"])).to_have_attribute("data-status", "completed")
    expect(panel.locator("table.attempts tbody tr")).to_have_count(4)
    assert server.build(build_id)["status"] == "completed"

    # A reload draws the same finished build again (from GET /builds/{id}, then the event log).
    page.reload()
    expect(build_status(page)).to_have_attribute("data-build-status", "completed")
    for task in PLAN_TASKS:
        expect(node(page, task["id"])).to_have_attribute("data-status", "completed")
    expect(page.get_by_test_id("task-count")).to_contain_text(f"{len(PLAN_TASKS)}/{len(PLAN_TASKS)} done")


def test_an_approval_build_is_approved_with_an_edited_plan(page: Page, server: Server) -> None:
    open_page(page, server)
    page.get_by_label("What should be built?").fill("Let me check the plan first")
    page.get_by_label("Let me approve or edit the plan before it runs").check()
    page.get_by_role("button", name="Start build").click()
    expect(build_status(page)).to_have_attribute("data-build-status", "awaiting_approval", timeout=30_000)
    build_id = page.url.split("#/builds/")[1]

    page.get_by_role("button", name="Edit plan", exact=True).click()
    editor = page.locator("section.editor")
    tasks = editor.get_by_role("navigation", name="Tasks in the plan")

    # A cycle is refused before anything is sent: setup would need page, which needs setup.
    tasks.get_by_role("button", name="Set up the project").click()
    editor.locator('input[data-dep="page"]').check()
    expect(editor.get_by_test_id("editor-cycles")).to_contain_text("cycle")
    editor.get_by_role("button", name="Approve the edited plan").click()
    expect(editor.get_by_role("alert")).to_contain_text("Not sent")
    assert server.build(build_id)["status"] == "awaiting_approval"
    editor.locator('input[data-dep="page"]').uncheck()

    # The edit: drop the flaky task, and the page no longer waits for the styles.
    tasks.get_by_role("button", name="Call the flaky service").click()
    editor.get_by_role("button", name="Remove this task").click()
    tasks.get_by_role("button", name="Assemble the page").click()
    editor.locator('input[data-dep="styles"]').uncheck()
    editor.get_by_role("button", name="Approve the edited plan").click()

    expect(build_status(page)).to_have_attribute("data-build-status", "completed", timeout=30_000)
    expect(page.locator(".dag-node")).to_have_count(len(PLAN_TASKS) - 1)
    expect(node(page, "flaky")).to_have_count(0)
    for task_id in ("setup", "styles", "hero", "page"):
        expect(node(page, task_id)).to_have_attribute("data-status", "completed")
    expect(page.locator('.react-flow__edge[data-id="styles->page"]')).to_have_count(0)
    expect(page.locator('.react-flow__edge[data-id="hero->page"]')).to_have_count(1)

    plan = server.build(build_id)["plan"]
    page_task = next(t for t in plan["tasks"] if t["id"] == "page")
    assert sorted(page_task["dependsOn"]) == ["hero"]
    assert "flaky" not in {t["id"] for t in plan["tasks"]}


def test_cancel_from_the_page_stops_the_build(page: Page, server: Server) -> None:
    # Waiting for approval, the build cannot end on its own before the click lands.
    build_id = server.start("Cancel me", requireApproval=True)
    open_page(page, server, f"#/builds/{build_id}")
    expect(build_status(page)).to_have_attribute("data-build-status", "awaiting_approval", timeout=30_000)
    page.get_by_role("button", name="Cancel build").click()
    page.get_by_role("button", name="Yes, cancel the build").click()
    expect(build_status(page)).to_have_attribute("data-build-status", "cancelled")
    expect(page.get_by_test_id("build-status")).to_have_text("Cancelled")
    expect(page.get_by_role("button", name="Approve plan")).to_have_count(0)
    assert server.build(build_id)["status"] == "cancelled"
    time.sleep(0.5)
    assert not [e for e in server.events(build_id) if e["type"] == "task_started"]


def test_a_dropped_live_connection_resumes_without_gaps_or_duplicates(page: Page, server: Server) -> None:
    """The page's WebSocket is dropped mid-build; on reconnecting it asks for what came after the
    highest seq it applied, and here the server is made to send everything again from seq 1: the page
    drops what it already has (by seq) and misses nothing that happened while it was away."""
    sockets: list[Any] = []

    def route(ws: Any) -> None:
        upstream = ws.connect_to_server()
        again = bool(sockets)
        sockets.append(ws)

        def from_page(message: str | bytes) -> None:
            frame = json.loads(message)
            if again and frame.get("action") == "subscribe":
                frame["after"] = 0  # every event again, the ones the page has included
            upstream.send(json.dumps(frame))

        ws.on_message(from_page)

    page.route_web_socket(re.compile(r"/ws(\?|$)"), route)
    build_id = server.start("Watched through a dropped connection")
    open_page(page, server, f"#/builds/{build_id}")
    expect(node(page, "setup")).to_have_attribute("data-status", re.compile("in_progress|completed"))
    sockets[0].close(code=4000, reason="dropped by the test")

    expect(build_status(page)).to_have_attribute("data-build-status", "completed_with_errors", timeout=30_000)
    assert len(sockets) >= 2, "the page reconnected"
    for task_id, status in (("setup", "completed"), ("hero", "completed"), ("flaky", "failed"), ("page", "skipped")):
        expect(node(page, task_id)).to_have_attribute("data-status", status)
    node(page, "flaky").click()
    attempts = page.locator("aside.task-panel table.attempts tbody tr")
    expect(attempts).to_have_count(3)  # three task_failed events, each applied once
    expect(page.get_by_test_id("task-count")).to_contain_text(f"3/{len(PLAN_TASKS)}")


def test_a_file_is_opened_highlighted_and_downloaded(page: Page, server: Server) -> None:
    build_id = server.early["finished"]
    server.wait_status(build_id, TERMINAL)
    open_page(page, server, f"#/builds/{build_id}")
    page.get_by_role("tab", name="Files").click()
    page.get_by_role("button", name="src/components/Hero.tsx").click()
    code = page.locator("pre.code")
    expect(code).to_contain_text("export function Hero()")
    expect(code.locator(".hljs-keyword").first).to_be_visible()

    with page.expect_download() as one:
        page.get_by_role("button", name="Download", exact=True).click()
    assert one.value.suggested_filename == "Hero.tsx"
    assert "export function Hero()" in Path(one.value.path()).read_text()

    with page.expect_download() as everything:
        page.get_by_role("button", name="Download all (.zip)").click()
    with zipfile.ZipFile(io.BytesIO(Path(everything.value.path()).read_bytes())) as z:
        assert "src/components/Hero.tsx" in z.namelist()


def _axe(page: Page, axe_source: str) -> list[dict[str, Any]]:
    page.evaluate(axe_source)  # through the devtools protocol: the page's CSP does not apply
    result = page.evaluate("async () => (await axe.run(document, {resultTypes: ['violations']})).violations")
    return [v for v in result if v.get("impact") in ("serious", "critical")]


def test_no_serious_or_critical_accessibility_violations(page: Page, server: Server, axe_source: str) -> None:
    build_id = server.early["finished"]
    server.wait_status(build_id, TERMINAL)
    found: dict[str, list[str]] = {}

    open_page(page, server)
    expect(page.get_by_role("table")).to_be_visible()
    found["builds list"] = [f"{v['id']}: {v['help']}" for v in _axe(page, axe_source)]

    page.goto(f"{server.base}/#/builds/{build_id}")
    expect(node(page, "flaky")).to_have_attribute("data-status", "failed")
    node(page, "flaky").click()
    expect(page.locator("aside.task-panel")).to_be_visible()
    found["build graph with a task open"] = [f"{v['id']}: {v['help']}" for v in _axe(page, axe_source)]

    page.get_by_role("tab", name="Tasks").click()
    found["task table"] = [f"{v['id']}: {v['help']}" for v in _axe(page, axe_source)]

    page.get_by_role("tab", name="Files").click()
    page.get_by_role("button", name="src/components/Hero.tsx").click()
    expect(page.locator("pre.code")).to_contain_text("Hero")
    found["files"] = [f"{v['id']}: {v['help']}" for v in _axe(page, axe_source)]

    assert not any(found.values()), found


def test_the_dashboard_is_keyboard_operable(page: Page, server: Server) -> None:
    build_id = server.early["finished"]
    server.wait_status(build_id, TERMINAL)
    open_page(page, server, f"#/builds/{build_id}")
    expect(node(page, "hero")).to_have_attribute("data-status", "completed")
    # Tabs move with the arrow keys.
    page.get_by_role("tab", name="Graph").focus()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="Tasks (5)")).to_be_focused()
    expect(page.get_by_role("tab", name="Tasks (5)")).to_have_attribute("aria-selected", "true")
    page.keyboard.press("ArrowLeft")
    # A node takes focus and Enter opens its details.
    page.locator('.react-flow__node[data-id="hero"]').focus()
    page.keyboard.press("Enter")
    expect(page.locator("aside.task-panel h2")).to_have_text("Build the hero")
