"""Each Lambda handler on moto, fed the events AWS would give it.

- `TestApi` runs the whole system (`LocalRuntime`: Step Functions executing the ASL, pollers, the
  mock provider) and talks to the API handler the way API Gateway does.
- `TestWorkers` runs the same resources with no pollers (`QuietRuntime`), so a test hands the plan,
  dispatch and task handlers real SQS / Step Functions events itself and inspects the queues.

Each class starts one runtime (~3 s) and shares it; every test uses its own user and builds.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from local.pollers import sqs_record as poller_record
from local.runtime import LocalRuntime
from shared.dal.aws import client
from shared.dal.queues import finished_message, send_batch
from shared.logic.services import services
from shared.models.messages import TaskFinished
from tests.helpers import REGION, drain_queue, sqs_event, sqs_record, task, wait_for
from tests.integration.quiet import QuietRuntime, executing, lambda_context, new_build

TERMINAL = {"build_completed", "build_failed", "build_cancelled"}

# docs/api.md#routes: every route, with its method.
CONTRACT_ROUTES = {
    ("post", "/builds"),
    ("get", "/builds"),
    ("get", "/builds/{buildId}"),
    ("get", "/builds/{buildId}/events"),
    ("post", "/builds/{buildId}/approval"),
    ("post", "/builds/{buildId}/cancel"),
    ("post", "/builds/{buildId}/tasks/{taskId}/retry"),
    ("post", "/builds/{buildId}/tasks/{taskId}/skip"),
    ("get", "/builds/{buildId}/files"),
    ("get", "/builds/{buildId}/files/{path}"),
    ("get", "/openapi.json"),
}


@contextlib.contextmanager
def _aws_calls() -> Iterator[list[tuple[str, dict[str, Any]]]]:
    """The AWS requests this thread and the API calls it makes (each its own invocation) make
    meanwhile (the runtime's own threads are not counted)."""
    import botocore.client

    from local import invocations

    calls: list[tuple[str, dict[str, Any]]] = []
    me = threading.get_ident()
    original = botocore.client.BaseClient._make_api_call

    def counted(client_: Any, operation: str, params: dict[str, Any]) -> Any:
        invocation = invocations.current.get()
        if threading.get_ident() == me or (invocation is not None and invocation.name.endswith("-api")):
            calls.append((operation, params))
        return original(client_, operation, params)

    botocore.client.BaseClient._make_api_call = counted  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        botocore.client.BaseClient._make_api_call = original  # type: ignore[method-assign]


def _user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


def _script(tmp_path_factory: pytest.TempPathFactory, script: dict[str, Any]) -> str:
    path = tmp_path_factory.mktemp("script") / "mock-script.json"
    path.write_text(json.dumps(script))
    return str(path)


# =================================================================================================
# The API, with the whole system behind it
# =================================================================================================
@pytest.fixture(scope="class")
def rt(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalRuntime]:
    script = _script(tmp_path_factory, {"default_task": {"delay_ms": 0}})
    with LocalRuntime(env={"STEPWISE_MOCK_SCRIPT": script}) as runtime:
        yield runtime


@pytest.fixture(scope="class")
def done_build(rt: LocalRuntime) -> tuple[str, str, list[dict[str, Any]]]:
    """One landing-page build run to its end, shared by the tests that only read it."""
    user = _user()
    api = TestApi()
    build_id = api.start(rt, user)
    return user, build_id, api.finished(rt, user, build_id)


class TestApi:
    def events(self, rt: LocalRuntime, user: str, build_id: str) -> list[dict[str, Any]]:
        status, body = rt.invoke_api("GET", f"/builds/{build_id}/events", user=user, query={"limit": "1000"})
        assert status == 200
        return body["events"]

    def start(self, rt: LocalRuntime, user: str, **body: Any) -> str:
        status, answer = rt.invoke_api(
            "POST", "/builds", user=user, body={"prompt": "Create a landing page with a hero section", **body}
        )
        assert status == 202, answer
        return answer["buildId"]

    def finished(self, rt: LocalRuntime, user: str, build_id: str) -> list[dict[str, Any]]:
        return wait_for(
            lambda: (lambda evs: evs if evs and evs[-1]["type"] in TERMINAL else None)(self.events(rt, user, build_id)),
            what=f"{build_id} to end",
        )

    def test_post_builds_answers_202_with_links(self, rt):
        user = _user()
        status, body = rt.invoke_api("POST", "/builds", user=user, body={"prompt": "A todo app"})
        assert status == 202
        build_id = body["buildId"]
        assert build_id.startswith("bld_")
        assert body == {
            "buildId": build_id,
            "status": "planning",
            "links": {"self": f"/builds/{build_id}", "events": f"/builds/{build_id}/events"},
        }
        first = self.events(rt, user, build_id)[0]
        assert first["type"] == "build_started" and first["seq"] == 1
        assert first["data"] == {"prompt": "A todo app", "framework": None}

    def test_owner_sees_the_build_and_anyone_else_gets_the_same_404_as_for_a_missing_one(self, rt):
        owner = _user()
        build_id = self.start(rt, owner)
        status, view = rt.invoke_api("GET", f"/builds/{build_id}", user=owner)
        assert status == 200 and view["buildId"] == build_id
        assert view["status"] in {"planning", "awaiting_approval", "executing", "completed"}

        missing = "bld_" + "0" * 26
        other_status, other = rt.invoke_api("GET", f"/builds/{build_id}", user=_user())
        missing_status, absent = rt.invoke_api("GET", f"/builds/{missing}", user=owner)
        assert other_status == missing_status == 404
        assert json.dumps(other).replace(build_id, "ID") == json.dumps(absent).replace(missing, "ID")
        for path in ("events", "files", "files/index.html"):
            status, _ = rt.invoke_api("GET", f"/builds/{build_id}/{path}", user=_user())
            assert status == 404, path
        assert rt.invoke_api("POST", f"/builds/{build_id}/cancel", user=_user())[0] == 404

    def test_malformed_json_is_400(self, rt):
        status, body = rt.invoke_api("POST", "/builds", user=_user(), body='{"prompt": "x",')
        assert status == 400
        assert body["error"]["code"] and body["error"]["message"]

    @pytest.mark.parametrize(
        ("body", "field"),
        [
            ({"prompt": "x", "maxConcurrency": 50}, "maxConcurrency"),
            ({"prompt": ""}, "prompt"),
            ({}, "prompt"),
            ({"prompt": "x", "budgetUsd": 0}, "budgetUsd"),
            ('{"prompt": "x", "budgetUsd": 1e999}', "budgetUsd"),  # valid JSON, parses as infinity
            ({"prompt": "x", "files": [{"path": "../escape.txt", "content": "x"}]}, "files"),
            ({"prompt": "x", "unknownField": 1}, "unknownField"),
        ],
    )
    def test_invalid_field_is_422_naming_the_field(self, rt, body, field):
        status, answer = rt.invoke_api("POST", "/builds", user=_user(), body=body)
        assert status == 422, answer
        assert any(d["field"].split(".")[0] == field for d in answer["error"]["details"]), answer

    def test_bad_query_parameter_is_422(self, rt):
        status, answer = rt.invoke_api("GET", "/builds", user=_user(), query={"limit": "500"})
        assert status == 422 and answer["error"]["details"][0]["field"] == "limit"

    @pytest.mark.parametrize(
        ("method", "path"),
        [
            ("POST", "/builds"),
            ("GET", "/builds"),
            ("GET", "/builds/bld_x"),
            ("GET", "/builds/bld_x/events"),
            ("POST", "/builds/bld_x/cancel"),
            ("GET", "/builds/bld_x/files"),
        ],
    )
    def test_missing_token_is_401(self, rt, method, path):
        status, body = rt.invoke_api(method, path, user=None, body={"prompt": "x"} if method == "POST" else None)
        assert status == 401
        assert body["error"]["code"]

    def test_openapi_lists_every_contract_route(self, rt):
        status, doc = rt.invoke_api("GET", "/openapi.json", user=None)
        assert status == 200
        assert doc["openapi"].startswith("3.")
        routes = {(method, path) for path, ops in doc["paths"].items() for method in ops}
        assert routes == CONTRACT_ROUTES, routes ^ CONTRACT_ROUTES
        from functions.api.handler import ROUTES

        assert {(m.lower(), p) for m, p in ROUTES} - {("get", "/docs")} == routes  # 405 knows every path
        accepted = {("post", "/builds"), *((m, p) for m, p in routes if p.endswith(("/cancel", "/retry", "/skip")))}
        for path, ops in doc["paths"].items():
            for method, op in ops.items():
                codes = set(op["responses"])
                success = "202" if (method, path) in accepted else "200"
                assert success in codes and not ({"200", "202"} - {success}) & codes, (method, path)
                if path == "/openapi.json":
                    continue
                assert {"401", "429"} <= codes and op["security"] == [{"bearerAuth": []}], (method, path)
                if "{buildId}" in path:
                    assert "404" in codes, (method, path)
                for code, answer in op["responses"].items():
                    if code.startswith("4"):
                        ref = answer["content"]["application/json"]["schema"]["$ref"]
                        assert ref.endswith("/ErrorResponse"), (method, path, code)
        assert doc["paths"]["/builds"]["post"]["responses"]["409"]  # Idempotency-Key reuse
        assert set(doc["paths"]["/builds/{buildId}/files/{path}"]["get"]["responses"]["200"]["content"]) >= {
            "application/json",
            "text/plain",
            "text/html",
        }

    def test_concurrent_requests_never_see_each_others_caller(self, rt):
        """`stepwise serve` answers requests on many threads through one handler: each request keeps
        its own caller (another user's build would answer 404)."""
        import threading

        users = [_user() for _ in range(6)]
        own = {u: self.start(rt, u, requireApproval=True) for u in users}
        wrong: list[tuple[str, int]] = []
        gate = threading.Barrier(len(users))

        def read(user: str) -> None:
            gate.wait()
            for _ in range(15):
                status, view = rt.invoke_api("GET", f"/builds/{own[user]}", user=user)
                if status != 200 or view["buildId"] != own[user]:
                    wrong.append((user, status))

        threads = [threading.Thread(target=read, args=(u,)) for u in users]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert wrong == []

    def test_racing_decisions_right_after_create_never_answer_5xx(self, rt):
        """Cancel, approve, reject, retry and skip fired together at a build that just started."""
        import threading

        user = _user()
        build_id = self.start(rt, user, requireApproval=True)
        calls = [
            ("POST", f"/builds/{build_id}/cancel", None),
            ("POST", f"/builds/{build_id}/approval", {"approved": True}),
            ("POST", f"/builds/{build_id}/approval", {"approved": False}),
            ("POST", f"/builds/{build_id}/tasks/hero/retry", None),
            ("POST", f"/builds/{build_id}/tasks/hero/skip", None),
            ("POST", f"/builds/{build_id}/cancel", None),
        ]
        statuses: list[int] = []
        gate = threading.Barrier(len(calls))

        def call(method: str, path: str, body: Any) -> None:
            gate.wait()
            statuses.append(rt.invoke_api(method, path, user=user, body=body)[0])

        threads = [threading.Thread(target=call, args=c) for c in calls]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert set(statuses) <= {200, 202, 404, 409}, statuses
        assert statuses.count(202) >= 1  # one cancel got through (or the other one did)
        events = self.finished(rt, user, build_id)
        assert [e["type"] for e in events].count("build_cancelled") == 1

    def test_same_idempotency_key_and_body_gives_the_same_build(self, rt):
        user, key = _user(), str(uuid.uuid4())
        body = {"prompt": "An idempotent landing page"}
        first = rt.invoke_api("POST", "/builds", user=user, body=body, headers={"Idempotency-Key": key})
        again = rt.invoke_api("POST", "/builds", user=user, body=body, headers={"Idempotency-Key": key})
        assert first[0] == again[0] == 202
        assert again[1]["buildId"] == first[1]["buildId"]
        status, listing = rt.invoke_api("GET", "/builds", user=user)
        assert status == 200 and [b["buildId"] for b in listing["builds"]] == [first[1]["buildId"]]

        other = rt.invoke_api(
            "POST", "/builds", user=user, body={"prompt": "Something else"}, headers={"Idempotency-Key": key}
        )
        assert other[0] == 409
        assert len(rt.invoke_api("GET", "/builds", user=user)[1]["builds"]) == 1
        # the key belongs to its user: another user's identical request is a build of its own
        stranger = rt.invoke_api("POST", "/builds", user=_user(), body=body, headers={"Idempotency-Key": key})
        assert stranger[0] == 202 and stranger[1]["buildId"] != first[1]["buildId"]

    def test_list_builds_newest_first_and_pages(self, rt):
        user = _user()
        ids = [self.start(rt, user, requireApproval=True) for _ in range(3)]
        status, listing = rt.invoke_api("GET", "/builds", user=user)
        assert status == 200 and [b["buildId"] for b in listing["builds"]] == ids[::-1]
        page1 = rt.invoke_api("GET", "/builds", user=user, query={"limit": "2"})[1]
        assert [b["buildId"] for b in page1["builds"]] == ids[:0:-1] and page1["next"]
        page2 = rt.invoke_api("GET", "/builds", user=user, query={"limit": "2", "cursor": page1["next"]})[1]
        assert [b["buildId"] for b in page2["builds"]] == ids[:1]

    def test_events_page_with_after_and_limit(self, rt, done_build):
        user, build_id, everything = done_build
        assert [e["seq"] for e in everything] == list(range(1, len(everything) + 1))
        collected, after = [], 0
        while True:
            status, page = rt.invoke_api(
                "GET", f"/builds/{build_id}/events", user=user, query={"after": str(after), "limit": "4"}
            )
            assert status == 200 and len(page["events"]) <= 4
            collected += page["events"]
            if page["next"] is None:
                break
            after = page["next"]
        assert collected == everything
        status, tail = rt.invoke_api(
            "GET", f"/builds/{build_id}/events", user=user, query={"after": str(len(everything) - 2)}
        )
        assert [e["seq"] for e in tail["events"]] == [len(everything) - 1, len(everything)]
        for e in everything:
            assert set(e) == {"id", "type", "buildId", "seq", "timestamp", "data"}
            assert e["buildId"] == build_id

    def test_files_listing_and_one_file_by_a_path_with_slashes(self, rt, done_build):
        user, build_id, events = done_build
        assert events[-1]["data"]["status"] == "completed"
        status, files = rt.invoke_api("GET", f"/builds/{build_id}/files", user=user)
        assert status == 200
        by_path = {f["path"]: f for f in files}
        assert "src/components/Hero.tsx" in by_path
        for f in files:
            assert set(f) == {"path", "size", "sha256", "taskId"}
        status, content = rt.invoke_api("GET", f"/builds/{build_id}/files/src/components/Hero.tsx", user=user)
        assert status == 200
        hero = by_path["src/components/Hero.tsx"]
        raw = content.encode() if isinstance(content, str) else json.dumps(content).encode()
        assert len(raw) == hero["size"]
        assert hashlib.sha256(raw).hexdigest() == hero["sha256"]
        assert rt.invoke_api("GET", f"/builds/{build_id}/files/src/components/Nope.tsx", user=user)[0] == 404
        assert rt.invoke_api("GET", f"/builds/{build_id}/files/..%2F..%2Fetc%2Fpasswd", user=user)[0] == 404

    def test_a_file_is_read_with_one_lookup_and_the_listing_reads_no_task(self, rt, done_build):
        """Reading a file costs the same however many tasks the build has: the build (ownership), the
        path's index item and the object; the listing reads the build's file index, not its tasks."""
        user, build_id, events = done_build
        with _aws_calls() as calls:
            status, _ = rt.invoke_api("GET", f"/builds/{build_id}/files/src/components/Hero.tsx", user=user)
        assert status == 200
        assert sorted(op for op, _ in calls) == ["GetItem", "GetItem", "GetObject"]
        with _aws_calls() as calls:
            status, files = rt.invoke_api("GET", f"/builds/{build_id}/files", user=user)
        assert status == 200 and files
        queried = [p["ExpressionAttributeValues"][":b"]["S"] for op, p in calls if op == "Query"]
        assert queried == [f"{build_id}#files"]
        # the index is no task: the build's view lists exactly the tasks that ran
        view = rt.invoke_api("GET", f"/builds/{build_id}", user=user)[1]
        ran = {e["data"]["taskId"] for e in events if e["type"] == "task_completed"}
        assert {t["id"] for t in view["plan"]["tasks"]} == ran

    def test_cancel_is_202_then_409(self, rt):
        user = _user()
        build_id = self.start(rt, user, requireApproval=True)
        wait_for(
            lambda: any(e["type"] == "plan_approval_required" for e in self.events(rt, user, build_id)),
            what="approval to be requested",
        )
        status, body = rt.invoke_api("POST", f"/builds/{build_id}/cancel", user=user)
        assert status == 202 and body["status"] == "cancelled"
        assert rt.invoke_api("GET", f"/builds/{build_id}", user=user)[1]["status"] == "cancelled"
        again = rt.invoke_api("POST", f"/builds/{build_id}/cancel", user=user)
        assert again[0] == 409
        assert rt.invoke_api("POST", f"/builds/{build_id}/approval", user=user, body={"approved": True})[0] == 409
        events = self.events(rt, user, build_id)
        assert [e["type"] for e in events].count("build_cancelled") == 1
        assert not any(e["type"] == "task_started" for e in events)

    def test_builds_with_the_same_plan_running_at_once_all_complete(self, rt):
        """Same prompt, same task ids: one build's "task finished" notices must not swallow another's."""
        user = _user()
        ids = [self.start(rt, user, prompt="A portfolio site with a contact form") for _ in range(3)]
        for build_id in ids:
            last = self.finished(rt, user, build_id)[-1]
            assert last["type"] == "build_completed" and last["data"]["status"] == "completed", last

    def test_finished_build_view_shows_every_task_metrics_and_files(self, rt, done_build):
        user, build_id, events = done_build
        status, view = rt.invoke_api("GET", f"/builds/{build_id}", user=user)
        assert status == 200 and view["status"] == "completed" and view["recovery"] is None
        assert view["plan"]["tasks"] and {t["status"] for t in view["plan"]["tasks"]} == {"completed"}
        metrics = view["metrics"]
        assert set(metrics) == {
            "totalTasks",
            "completedTasks",
            "failedTasks",
            "skippedTasks",
            "cachedTasks",
            "promptTokens",
            "completionTokens",
            "costUsd",
            "planCostUsd",
            "durationMs",
        }
        assert metrics["totalTasks"] == metrics["completedTasks"] == len(view["plan"]["tasks"])
        # what a page needs to draw the build after a reload, without replaying events
        assert view["planVersion"] == 1 and view["startedAt"] >= view["createdAt"]
        assert view["estimatedDuration"] == view["plan"]["estimatedDuration"] > 0
        started = {e["data"]["taskId"]: e for e in events if e["type"] == "task_started"}
        completed = {e["data"]["taskId"]: e for e in events if e["type"] == "task_completed"}
        for t in view["plan"]["tasks"]:
            assert t["estimatedDuration"] > 0 and isinstance(t["dependsOn"], list)
            assert t["attempt"] == 1 and t["error"] is None and t["files"]
            assert t["startedAt"] <= t["completedAt"] and t["durationMs"] == completed[t["id"]]["data"]["durationMs"]
            assert t["usage"] == completed[t["id"]]["data"]["usage"]
            assert started[t["id"]]["timestamp"] <= t["completedAt"]
        assert metrics["failedTasks"] == metrics["skippedTasks"] == 0
        generated = next(e for e in events if e["type"] == "plan_generated")
        assert [t["id"] for t in view["plan"]["tasks"]] == [t["id"] for t in generated["data"]["tasks"]]
        listed = rt.invoke_api("GET", f"/builds/{build_id}/files", user=user)[1]
        assert events[-1]["data"]["files"] == sorted(f["path"] for f in listed)
        # every task started after all of its dependencies completed
        seq_of = {(e["type"], e["data"].get("taskId")): e["seq"] for e in events}
        for t in generated["data"]["tasks"]:
            for dep in t["dependsOn"]:
                assert seq_of[("task_completed", dep)] < seq_of[("task_started", t["id"])]

    @settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
    @given(
        body=st.one_of(
            st.text(max_size=40),
            st.dictionaries(
                st.sampled_from(
                    ["prompt", "framework", "files", "requireApproval", "budgetUsd", "maxConcurrency", "extra"]
                ),
                st.one_of(
                    st.none(),
                    st.booleans(),
                    st.integers(-(10**20), 10**20),
                    st.floats(allow_nan=False),
                    st.text(max_size=30),
                    st.lists(
                        st.dictionaries(st.sampled_from(["path", "content"]), st.text(max_size=12), max_size=2),
                        max_size=2,
                    ),
                ),
                max_size=5,
            ).map(json.dumps),
        )
    )
    def test_client_input_never_produces_a_5xx(self, rt, body):
        status, answer = rt.invoke_api("POST", "/builds", user="fuzzer", body=body)
        assert status in (202, 400, 422), (status, answer)
        if status != 202:
            assert set(answer["error"]) >= {"code", "message"}

    @pytest.mark.parametrize("query", [{"after": "-1"}, {"limit": "0"}, {"limit": "abc"}, {"after": "1e3"}])
    def test_bad_events_query_is_422(self, rt, done_build, query):
        user, build_id, _ = done_build
        status, answer = rt.invoke_api("GET", f"/builds/{build_id}/events", user=user, query=query)
        assert status == 422, answer
        assert answer["error"]["details"][0]["field"] in query

    def test_approval_and_cancel_are_409_once_the_build_ended(self, rt, done_build):
        user, build_id, _ = done_build
        assert rt.invoke_api("POST", f"/builds/{build_id}/cancel", user=user)[0] == 409
        assert rt.invoke_api("POST", f"/builds/{build_id}/approval", user=user, body={"approved": True})[0] == 409


# =================================================================================================
# The worker handlers, fed by hand
# =================================================================================================
PLAN = [
    task("setup", priority=1, target="package.json", duration=5),
    task("hero", "setup", target="src/components/Hero.tsx", type="create_component", duration=20),
    task("styles", "setup", target="src/styles.css", duration=10),
    task("app", "hero", "styles", target="src/App.tsx", duration=5),
]
HERO = "export function Hero() {\n  return <h1>Hello</h1>;\n}\n"
SCRIPT = {
    "plan": {"tasks": PLAN, "chunk_chars": 17},
    "default_task": {"delay_ms": 0},
    "tasks": {
        "hero": {
            "files": [{"path": "src/components/Hero.tsx", "content": HERO}],
            "usage": {"promptTokens": 120, "completionTokens": 80},
        },
        "flaky": {"fail_attempts": 1},
        "broken": {"fail_attempts": 99},
        "fails-twice": {"fail_attempts": 2},
    },
}


@pytest.fixture(scope="class")
def quiet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[QuietRuntime]:
    env = {
        "STEPWISE_MOCK_SCRIPT": _script(tmp_path_factory, SCRIPT),
        "TASK_MAX_ATTEMPTS": "2",
        "TASK_RETRY_BASE_SECONDS": "0",
    }
    with QuietRuntime(env=env) as runtime:
        yield runtime


def _handler(name: str):
    from local.runtime import load_handler

    return load_handler(name)


def _events(build_id: str) -> list:
    return services().events.read(build_id, after=0, limit=1000)[0]


def _types(build_id: str) -> list[str]:
    return [e.type.value for e in _events(build_id)]


class TestWorkers:
    # --- plan ----------------------------------------------------------------------------------------
    def test_plan_handler_streams_each_task_then_the_plan(self, quiet):
        build_id = new_build(status="planning")
        result = _handler("plan")({"action": "plan", "buildId": build_id}, lambda_context("plan"))
        assert result["requireApproval"] is False and result["taskCount"] == 4
        assert result["remainingSeconds"] > 0
        events = _events(build_id)
        assert [e.type.value for e in events] == ["plan_partial"] * 4 + ["plan_generated"]
        partials, generated = events[:4], events[4]
        assert [p.data["totalTasksSoFar"] for p in partials] == [1, 2, 3, 4]
        planned = [
            {
                "id": t["id"],
                "name": t["name"],
                "type": t["type"],
                "description": t["description"],
                "estimatedDuration": t["estimatedDuration"],
                "dependsOn": t["input"]["dependencies"],
            }
            for t in PLAN
        ]
        assert [p.data["latestTasks"] for p in partials] == [[t] for t in planned]
        assert {p.data["planId"] for p in partials} == {generated.data["planId"]}
        assert generated.data["tasks"] == planned
        assert generated.data["planVersion"] == 1
        assert generated.data["taskCount"] == 4 and generated.data["recovery"] is None
        assert generated.data["estimatedDuration"] == 5 + 20 + 5  # the critical path
        assert [(t["id"], t["dependsOn"]) for t in generated.data["tasks"]] == [
            ("setup", []),
            ("hero", ["setup"]),
            ("styles", ["setup"]),
            ("app", ["hero", "styles"]),
        ]
        stored = services().tasks.list(build_id)
        assert [(t.taskId, t.status) for t in stored] == [(t["id"], "pending") for t in PLAN]

        # Step Functions retries the invocation: the same answer, nothing recorded twice
        again = _handler("plan")({"action": "plan", "buildId": build_id}, lambda_context("plan"))
        assert again["taskCount"] == 4
        assert len(_events(build_id)) == 5

    def test_tasks_closing_in_one_piece_of_the_stream_are_shown_and_handed_in_one_commit(self, quiet, monkeypatch):
        import botocore.client

        from shared.providers.mock import MockPlanStream

        monkeypatch.setattr(MockPlanStream, "chunks", lambda stream: iter([stream.text]))  # the whole plan at once
        calls: list[tuple[str, dict]] = []
        original = botocore.client.BaseClient._make_api_call

        def counted(client_, operation, params):
            calls.append((operation, params))
            return original(client_, operation, params)

        build_id = new_build(status="planning")
        monkeypatch.setattr(botocore.client.BaseClient, "_make_api_call", counted)
        assert _handler("plan")({"action": "plan", "buildId": build_id}, lambda_context("plan"))["taskCount"] == 4
        monkeypatch.undo()
        events = _events(build_id)
        assert [e.type.value for e in events] == ["plan_partial"] * 4 + ["plan_generated"]  # one per task, as ever
        assert [e.data["totalTasksSoFar"] for e in events[:4]] == [1, 2, 3, 4]
        commits = [p["TransactItems"] for op, p in calls if op == "TransactWriteItems"]
        kinds = [[(e.get("Put") or {}).get("Item", {}).get("type", {}).get("S") for e in c] for c in commits]
        assert [k.count("plan_partial") for k in kinds] == [4, 0]  # the four shown with their hand, then the plan
        # each task's item was written once, as it was handed: storing the plan rewrote none of them
        tasks_table = services().settings.tasks_table
        assert not [p for op, p in calls if op in ("UpdateItem", "PutItem", "BatchWriteItem") and tasks_table in str(p)]
        stored = services().tasks.list(build_id)
        assert [(t.taskId, t.order, t.task.id) for t in stored] == [(t["id"], i, t["id"]) for i, t in enumerate(PLAN)]

    def test_a_plan_over_max_plan_tasks_stops_reading_and_ends_plan_too_large(self, quiet, monkeypatch):
        import json

        from shared.errors import PlanTooLarge
        from shared.logic.finalizing import finalize
        from shared.logic.services import reset_services
        from shared.settings import reset_settings

        monkeypatch.setenv("MAX_PLAN_TASKS", "3")  # the script's plan has 4 tasks
        # Nothing started while it streamed (with tasks started, the build waits for them first:
        # tests/e2e/test_streaming.py).
        monkeypatch.setenv("STREAM_EXECUTION", "false")
        reset_settings()
        reset_services()
        try:
            build_id = new_build(status="planning")
            with pytest.raises(PlanTooLarge) as caught:
                _handler("plan")({"action": "plan", "buildId": build_id}, lambda_context("plan"))
            assert _types(build_id) == ["plan_partial"] * 3  # the 4th task was never shown
            assert services().tasks.list(build_id) == [] and services().builds.require(build_id).planId is None
            cause = json.dumps({"errorType": "PlanTooLarge", "errorMessage": str(caught.value)})
            assert finalize({"buildId": build_id, "error": {"Error": "PlanTooLarge", "Cause": cause}})["status"] == "failed"
        finally:
            monkeypatch.delenv("MAX_PLAN_TASKS")
            monkeypatch.delenv("STREAM_EXECUTION")
            reset_settings()
            reset_services()
        end = _events(build_id)[-1]
        assert end.type.value == "build_failed" and end.data["reason"] == "plan_too_large"
        assert "more than 3 tasks" in end.data["message"] and "MAX_PLAN_TASKS=3" in end.data["message"]
        assert services().builds.get(build_id).failureReason == "plan_too_large"

    # --- dispatch --------------------------------------------------------------------------------
    def _finished_record(
        self, quiet, build_id: str, task_id: str, outcome: str = "completed", attempt: int = 1
    ) -> dict:
        """Send a "task finished" message the way the task runner does and receive it as Lambda would."""
        body = TaskFinished(buildId=build_id, taskId=task_id, attempt=attempt, outcome=outcome)
        url = quiet.resources.queues["task-finished.fifo"]
        self._finished_messages(quiet)  # whatever earlier steps reported is not this test's
        send_batch(url, [finished_message(body, f"{task_id}:{attempt}:{outcome}")])
        messages = (
            client("sqs")
            .receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=1,
                AttributeNames=["All"],
                MessageSystemAttributeNames=["All"],
                VisibilityTimeout=0,
            )
            .get("Messages")
            or []
        )
        assert len(messages) == 1
        client("sqs").delete_message(QueueUrl=url, ReceiptHandle=messages[0]["ReceiptHandle"])
        return poller_record(messages[0], quiet.resources.queue_arns["task-finished.fifo"], REGION)

    def _dispatch(self, records: list[dict]) -> dict:
        result = _handler("dispatch")(sqs_event(records), lambda_context("dispatch"))
        assert result == {"batchItemFailures": []}
        return result

    def _queued(self, quiet) -> list[tuple[str, int]]:
        return sorted((m["taskId"], m["attempt"]) for m in drain_queue(client("sqs"), quiet.resources.queues["tasks"]))

    def test_dispatch_starts_roots_and_then_children_as_parents_finish(self, quiet):
        build_id = executing(quiet, PLAN)
        assert self._queued(quiet) == [("setup", 1)]
        self._dispatch([self._finished_record(quiet, build_id, "setup")])
        assert self._queued(quiet) == [("hero", 1), ("styles", 1)]
        self._dispatch([self._finished_record(quiet, build_id, "hero")])
        assert self._queued(quiet) == []  # "app" still waits for "styles"
        self._dispatch([self._finished_record(quiet, build_id, "styles")])
        assert self._queued(quiet) == [("app", 1)]

    def test_dispatch_keeps_at_most_max_concurrency_in_flight(self, quiet):
        wide = [task(f"w{i}", duration=i) for i in range(5)]
        build_id = executing(quiet, wide, max_concurrency=2)
        assert self._queued(quiet) == [("w3", 1), ("w4", 1)]  # longest first
        self._dispatch([self._finished_record(quiet, build_id, "w4")])
        assert self._queued(quiet) == [("w2", 1)]

    def test_duplicate_finished_changes_nothing_and_runs_no_task_twice(self, quiet):
        build_id = executing(quiet, PLAN)
        self._queued(quiet)
        record = self._finished_record(quiet, build_id, "setup")
        self._dispatch([record])
        first = self._queued(quiet)
        assert first == [("hero", 1), ("styles", 1)]
        version = services().builds.get(build_id).dispatchVersion

        redelivered = {
            **record,
            "receiptHandle": f"rh-{uuid.uuid4()}",
            "attributes": {**record["attributes"], "ApproximateReceiveCount": "2"},
        }
        self._dispatch([redelivered])
        self._dispatch([redelivered, {**redelivered, "messageId": str(uuid.uuid4())}])
        assert services().builds.get(build_id).dispatchVersion == version
        resent = self._queued(quiet)
        assert set(resent) <= set(first)  # at most a repeat of what was already decided
        # the task consumer runs every message it is given: each task still starts once
        for task_id, attempt in first + resent:
            self._run_task(quiet, build_id, task_id, attempt)
        started = [e.data["taskId"] for e in _events(build_id) if e.type.value == "task_started"]
        # "app" is started by the consumer that completed its last parent (handoff): once, too
        assert sorted(started) == ["app", "hero", "styles"]

    def test_duplicate_finished_enqueues_nothing_twice(self, quiet):
        build_id = executing(quiet, PLAN)
        self._queued(quiet)
        record = self._finished_record(quiet, build_id, "setup")
        self._dispatch([record])
        self._dispatch([{**record, "attributes": {**record["attributes"], "ApproximateReceiveCount": "2"}}])
        assert self._queued(quiet) == [("hero", 1), ("styles", 1)]

    def test_failed_task_skips_its_dependents_once(self, quiet):
        build_id = executing(quiet, PLAN)
        self._queued(quiet)
        record = self._finished_record(quiet, build_id, "setup", outcome="failed", attempt=2)
        self._dispatch([record])
        self._dispatch([record])
        skipped = [e.data for e in _events(build_id) if e.type.value == "task_skipped"]
        assert sorted(d["taskId"] for d in skipped) == ["app", "hero", "styles"]
        assert {d["dependency"] for d in skipped} == {"setup"}
        statuses = {t.taskId: t.status for t in services().tasks.list(build_id)}
        assert statuses == {"setup": "pending", "hero": "skipped", "styles": "skipped", "app": "skipped"}

    def test_stale_failure_after_a_retry_does_not_undo_the_retry(self, quiet):
        tasks = [task("a"), task("b", "a"), task("x", duration=50)]
        build_id = executing(quiet, tasks)
        self._queued(quiet)
        stale = self._finished_record(quiet, build_id, "a", outcome="failed", attempt=2)
        self._dispatch([stale])
        from shared.logic.readiness import reopen

        reopen.reopen_task(build_id, "a", services())
        assert self._queued(quiet) == [("a", 3)]
        self._dispatch([stale])  # the old message comes back (e.g. its delete was lost)
        self._dispatch([self._finished_record(quiet, build_id, "a", outcome="completed", attempt=3)])
        assert self._queued(quiet) == [("b", 1)]

    def test_poisoned_dispatch_records_fail_only_their_own_build(self, quiet, monkeypatch):
        """In one batch: build A's unreadable records fail with the rest of A's group (retried, then
        dead-lettered); build B's message of an unknown kind is dropped and its good record runs;
        an unreadable tasks-DLQ record is dropped (it names no task to fail)."""
        build_a = executing(quiet, PLAN)
        build_b = executing(quiet, PLAN)
        self._queued(quiet)
        good_a = self._finished_record(quiet, build_a, "setup")
        good_b = self._finished_record(quiet, build_b, "setup")
        fifo, dlq = quiet.resources.queue_arns["task-finished.fifo"], quiet.resources.queue_arns["tasks-dlq"]
        records = [
            sqs_record("not json", fifo, group_id=build_a, message_id="a-text"),
            good_a,
            # a second poisoned record in a group already held back (the processor parses it anew)
            sqs_record({"kind": "finished", "buildId": build_a}, fifo, group_id=build_a, message_id="a-no-task"),
            sqs_record({"kind": "pause", "buildId": build_b}, fifo, group_id=build_b, message_id="b-unknown"),
            good_b,
            sqs_record("{", dlq, message_id="dead-text"),
            sqs_record({"buildId": build_b, "attempt": 1}, dlq, message_id="dead-no-task"),
            sqs_record('{"task": {"prompt": "my private prompt"', dlq, message_id="dead-cut"),
        ]
        from shared.observability import logger

        errors: list[str] = []
        monkeypatch.setattr(logger, "error", lambda msg, *a, **kw: errors.append(f"{msg} {a} {kw}"))
        result = _handler("dispatch")(sqs_event(records), lambda_context("dispatch"))
        assert any("dead-cut" in line for line in errors)  # the dropped record is logged by its id...
        assert not any("my private prompt" in line for line in errors)  # ...not by its body
        failed = [f["itemIdentifier"] for f in result["batchItemFailures"]]
        assert failed == ["a-text", good_a["messageId"], "a-no-task"]
        queued = sorted((m["buildId"], m["taskId"]) for m in drain_queue(client("sqs"), quiet.resources.queues["tasks"]))
        assert queued == [(build_b, "hero"), (build_b, "styles")]  # only B's build moved on

    # --- webhook ---------------------------------------------------------------------------------
    def test_a_record_that_is_not_a_stream_record_fails_alone(self, quiet):
        """A poisoned webhook-queue record is reported failed by its message id (retried, then the
        webhook DLQ takes it); the batch's good record is handled: its build has no endpoint."""
        from shared.models.events import EventType

        build_id = new_build([task("a")])
        svc = services()
        svc.events.record(build_id, EventType.build_cancelled, {"reason": "test"})
        items = client("dynamodb").query(
            TableName=svc.events.table,
            KeyConditionExpression="buildId = :b",
            ExpressionAttributeValues={":b": {"S": build_id}},
        )["Items"]
        arn = quiet.resources.queue_arns["webhooks"]
        records = [
            sqs_record("not json", arn, message_id="w-text"),
            sqs_record({"eventName": "INSERT", "dynamodb": {"NewImage": items[-1]}}, arn, message_id="w-good"),
        ]
        result = _handler("webhook")(sqs_event(records), lambda_context("webhook"))
        assert result == {"batchItemFailures": [{"itemIdentifier": "w-text"}]}
        assert svc.events.delivery_counts(build_id).get("no_endpoint") == 1

    # --- task ------------------------------------------------------------------------------------
    def _task_record(self, quiet, build_id: str, task_id: str, attempt: int = 1, receive_count: int = 1) -> dict:
        body = {"buildId": build_id, "taskId": task_id, "attempt": attempt}
        return sqs_record(body, quiet.resources.queue_arns["tasks"], receive_count=receive_count)

    def _run_task(self, quiet, build_id: str, task_id: str, attempt: int = 1, receive_count: int = 1) -> None:
        result = _handler("task")(
            sqs_event([self._task_record(quiet, build_id, task_id, attempt, receive_count)]), lambda_context("task")
        )
        assert result == {"batchItemFailures": []}

    def _finished_messages(self, quiet) -> list[dict]:
        url = quiet.resources.queues["task-finished.fifo"]
        out = []
        while True:
            messages = (
                client("sqs")
                .receive_message(
                    QueueUrl=url,
                    MaxNumberOfMessages=10,
                    AttributeNames=["All"],
                    MessageSystemAttributeNames=["All"],
                    VisibilityTimeout=0,
                )
                .get("Messages")
                or []
            )
            if not messages:
                return out
            for m in messages:
                out.append({"body": json.loads(m["Body"]), "group": m["Attributes"].get("MessageGroupId")})
                client("sqs").delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])

    def test_a_record_that_is_not_a_task_message_fails_alone(self, quiet):
        """A poisoned record is reported failed by its message id (the queue retries it, then its
        DLQ takes it); the batch's other records run."""
        build_id = new_build([task("hero", target="src/components/Hero.tsx", type="create_component")])
        arn = quiet.resources.queue_arns["tasks"]
        records = [
            sqs_record("not json", arn, message_id="m-text"),
            self._task_record(quiet, build_id, "hero"),
            sqs_record({"buildId": build_id, "attempt": 1}, arn, message_id="m-no-task-id"),
        ]
        result = _handler("task")(sqs_event(records), lambda_context("task"))
        assert result == {"batchItemFailures": [{"itemIdentifier": "m-text"}, {"itemIdentifier": "m-no-task-id"}]}
        item = services().tasks.get(build_id, "hero")
        assert item is not None and item.status == "completed"
        self._finished_messages(quiet)

    def test_task_handler_runs_the_task_stores_its_files_and_reports(self, quiet):
        build_id = new_build([task("hero", target="src/components/Hero.tsx", type="create_component")])
        self._finished_messages(quiet)
        self._run_task(quiet, build_id, "hero")
        events = _events(build_id)
        assert [e.type.value for e in events] == ["task_started", "task_completed"]
        assert events[0].data == {"taskId": "hero", "taskName": "Task hero", "description": "Do hero", "attempt": 1}
        done = events[1].data
        assert done["files"] == ["src/components/Hero.tsx"] and done["filesCreated"] == 1
        assert done["cached"] is False
        assert done["usage"]["promptTokens"] == 120 and done["usage"]["completionTokens"] == 80
        assert services().files.get_text(build_id, "src/components/Hero.tsx") == HERO
        item = services().tasks.get(build_id, "hero")
        assert item is not None and item.status == "completed" and item.attempt == 1
        [finished] = self._finished_messages(quiet)
        assert finished["group"] == build_id
        assert finished["body"] | {"costUsd": 0} == {
            "kind": "finished",
            "buildId": build_id,
            "taskId": "hero",
            "attempt": 1,
            "outcome": "completed",
            "costUsd": 0,
        }

        # the same message again (at-least-once): the task does not run a second time
        self._run_task(quiet, build_id, "hero", receive_count=2)
        assert _types(build_id) == ["task_started", "task_completed"]
        assert services().tasks.get(build_id, "hero").completedAt == item.completedAt
        for again in self._finished_messages(quiet):  # at most the same report again
            assert again["body"] == finished["body"]

    def test_failed_attempt_is_retried_then_succeeds(self, quiet):
        build_id = new_build([task("flaky", target="flaky.txt")])
        drain_queue(client("sqs"), quiet.resources.queues["tasks"])
        self._finished_messages(quiet)
        self._run_task(quiet, build_id, "flaky")
        failed = [e.data for e in _events(build_id) if e.type.value == "task_failed"]
        assert len(failed) == 1 and failed[0]["attempt"] == 1 and failed[0]["willRetry"] is True
        assert self._finished_messages(quiet) == []  # the dispatcher hears only the final outcome
        assert self._queued(quiet) == [("flaky", 2)]
        self._run_task(quiet, build_id, "flaky", attempt=2)
        assert _types(build_id) == ["task_started", "task_failed", "task_started", "task_completed"]
        [finished] = self._finished_messages(quiet)
        assert finished["body"]["outcome"] == "completed" and finished["body"]["attempt"] == 2

    def test_task_that_keeps_failing_reports_failure_after_the_last_attempt(self, quiet):
        build_id = new_build([task("broken", target="broken.txt")])
        drain_queue(client("sqs"), quiet.resources.queues["tasks"])
        self._finished_messages(quiet)
        self._run_task(quiet, build_id, "broken")
        self._run_task(quiet, build_id, "broken", attempt=2)  # TASK_MAX_ATTEMPTS=2
        failed = [e.data for e in _events(build_id) if e.type.value == "task_failed"]
        assert [(f["attempt"], f["willRetry"]) for f in failed] == [(1, True), (2, False)]
        assert services().tasks.get(build_id, "broken").status == "failed"
        assert self._queued(quiet) == [("broken", 2)]  # only the retry was queued, no third attempt
        [finished] = self._finished_messages(quiet)
        assert finished["body"]["outcome"] == "failed"

    # --- retry through the API -------------------------------------------------------------------
    def _retry_scenario(self, quiet) -> tuple[str, str]:
        """ "fails-twice" and "broken" fail for good, "joined" needs both, "solo" is independent.
        The user retries "fails-twice" (which then succeeds); "broken" stays failed."""
        plan = [
            task("fails-twice", target="a.txt"),
            task("broken", target="b.txt"),
            task("joined", "fails-twice", "broken", target="c.txt"),
            task("solo", target="d.txt"),
        ]
        build_id = executing(quiet, plan)
        owner = services().builds.get(build_id).ownerId
        self._finished_messages(quiet)
        assert self._queued(quiet) == [("broken", 1), ("fails-twice", 1), ("solo", 1)]
        for task_id in ("fails-twice", "broken"):
            self._run_task(quiet, build_id, task_id, 1)
            self._run_task(quiet, build_id, task_id, 2)
        reports = self._finished_messages(quiet)
        assert sorted((r["body"]["taskId"], r["body"]["outcome"]) for r in reports) == [
            ("broken", "failed"),
            ("fails-twice", "failed"),
        ]
        self._dispatch([self._finished_record(quiet, build_id, t, "failed", 2) for t in ("fails-twice", "broken")])
        assert [e.data["taskId"] for e in _events(build_id) if e.type.value == "task_skipped"] == ["joined"]
        self._queued(quiet)  # the retries the task runner queued, already run above

        status, answer = quiet.invoke_api("POST", f"/builds/{build_id}/tasks/fails-twice/retry", user=owner)
        assert status == 202, answer
        assert self._queued(quiet) == [("fails-twice", 3)]
        self._run_task(quiet, build_id, "fails-twice", 3)
        self._run_task(quiet, build_id, "solo", 1)
        self._dispatch(
            [
                self._finished_record(quiet, build_id, "fails-twice", "completed", 3),
                self._finished_record(quiet, build_id, "solo", "completed", 1),
            ]
        )
        return build_id, owner

    def test_retry_reruns_the_task_and_the_build_still_reaches_its_end(self, quiet):
        from shared.logic.readiness import scheduler

        build_id, _ = self._retry_scenario(quiet)
        assert self._queued(quiet) == []  # "joined" cannot run: "broken" is still failed
        order = [t.taskId for t in services().tasks.list(build_id)]
        state = scheduler.DispatchState.from_json(services().builds.get(build_id).dispatch, order)
        assert not state.running and not state.ready
        assert state.done == {"fails-twice", "solo"} and state.failed == {"broken"}
        assert state.skipped == {"joined"}  # nothing left open: the Execute step can finish

    def test_retry_leaves_a_dependent_of_another_failure_shown_as_skipped(self, quiet):
        build_id, owner = self._retry_scenario(quiet)
        status, view = quiet.invoke_api("GET", f"/builds/{build_id}", user=owner)
        assert status == 200
        assert {t["id"]: t["status"] for t in view["plan"]["tasks"]} == {
            "fails-twice": "completed",
            "broken": "failed",
            "joined": "skipped",
            "solo": "completed",
        }

    def test_a_retry_between_the_execute_answer_and_finalize_is_not_lost(self, quiet):
        """The run's last task settled (Execute answered) and Finalize has not yet recorded the end:
        a retry accepted then waits for that end and re-opens the build; the task runs again."""
        import threading

        plan = [task("fails-twice", target="a.txt"), task("after", "fails-twice", target="b.txt")]
        build_id = executing(quiet, plan)
        owner = services().builds.get(build_id).ownerId
        self._finished_messages(quiet)
        self._queued(quiet)
        self._run_task(quiet, build_id, "fails-twice", 1)
        self._run_task(quiet, build_id, "fails-twice", 2)
        self._finished_messages(quiet)
        self._queued(quiet)
        self._dispatch([self._finished_record(quiet, build_id, "fails-twice", "failed", 2)])
        assert services().builds.get(build_id).status == "executing"  # Finalize has not run yet

        answer: dict[str, Any] = {}

        def retry() -> None:
            answer["r"] = quiet.invoke_api("POST", f"/builds/{build_id}/tasks/fails-twice/retry", user=owner)

        thread = threading.Thread(target=retry)
        thread.start()
        thread.join(timeout=0.5)
        assert thread.is_alive()  # it waits for the run's end instead of joining a run that is over
        final = _handler("dispatch")({"action": "finalize", "state": {"buildId": build_id}}, lambda_context("dispatch"))
        assert final["status"] == "completed_with_errors"
        thread.join(timeout=30)
        status, body = answer["r"]
        assert status == 202, body
        assert body["buildResumed"] is True and body["reopened"] == ["fails-twice", "after"]
        assert _types(build_id)[-2:] == ["build_completed", "build_resumed"]

        queued = self._queued(quiet)
        assert queued == [("fails-twice", 3)]
        for _ in range(5):  # be the event sources: run what is queued, deliver what is reported
            for task_id, attempt in queued:
                self._run_task(quiet, build_id, task_id, attempt)
            for report in self._finished_messages(quiet):
                b = report["body"]
                self._dispatch([self._finished_record(quiet, build_id, b["taskId"], b["outcome"], b["attempt"])])
            queued = self._queued(quiet)
            if not queued:
                break
        ends = wait_for(
            lambda: (lambda e: e if len(e) == 2 else None)(
                [x for x in _events(build_id) if x.type.value == "build_completed"]
            ),
            what="the re-opened run to end",
        )
        assert [e.data["status"] for e in ends] == ["completed_with_errors", "completed"]
        assert {t.taskId: t.status for t in services().tasks.list(build_id)} == {
            "fails-twice": "completed",
            "after": "completed",
        }

    def test_identical_task_is_served_from_the_cache(self, quiet):
        prompt = f"A cached landing page {uuid.uuid4()}"
        plan = [task("hero", target="src/components/Hero.tsx", type="create_component")]
        first, second = new_build(plan, prompt=prompt), new_build(plan, prompt=prompt)
        self._run_task(quiet, first, "hero")
        self._run_task(quiet, second, "hero")
        [fresh] = [e.data for e in _events(first) if e.type.value == "task_completed"]
        [cached] = [e.data for e in _events(second) if e.type.value == "task_completed"]
        assert fresh["cached"] is False and fresh["usage"]["promptTokens"] == 120
        assert cached["cached"] is True and cached["usage"]["promptTokens"] == 0
        assert cached["files"] == fresh["files"]
        assert services().files.get_text(second, "src/components/Hero.tsx") == HERO
        # a different build prompt is a different task: no cache hit
        third = new_build(plan)
        self._run_task(quiet, third, "hero")
        assert [e.data["cached"] for e in _events(third) if e.type.value == "task_completed"] == [False]

    def test_task_message_for_a_cancelled_build_runs_nothing(self, quiet):
        build_id = new_build([task("hero")], status="cancelled")
        self._finished_messages(quiet)
        self._run_task(quiet, build_id, "hero")
        assert _types(build_id) == []
        assert services().tasks.get(build_id, "hero").status == "cancelled"
