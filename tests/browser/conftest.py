"""Browser tests: Debian's Chromium, driven by Playwright for Python, against a real `stepwise serve`
(mock provider with a script) serving the built dashboard.

Needs /usr/bin/chromium, web/node_modules and web/dist. `bash scripts/test.sh` installs and builds
all three and sets STEPWISE_REQUIRE_BROWSER=1, so there a missing piece fails instead of skipping.
Screenshots of every test are kept in test-artifacts/browser/ (or $STEPWISE_TEST_ARTIFACTS).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.serving import ROOT, serving

CHROMIUM = Path("/usr/bin/chromium")
WEB = ROOT / "web"
TOKEN = "browser-token"
ARTIFACTS = Path(os.environ.get("STEPWISE_TEST_ARTIFACTS", ROOT / "test-artifacts")) / "browser"

# One plan for every build of these tests: streamed slowly enough to watch (tasks appear while it is
# written); `flaky` fails all three attempts, so `page` (which needs it) is skipped until a retry.
PLAN_TASKS: list[dict[str, Any]] = [
    {
        "id": "setup",
        "type": "setup_config",
        "name": "Set up the project",
        "description": "package.json",
        "estimatedDuration": 5,
        "priority": 1,
        "input": {"targetPath": "package.json"},
    },
    {
        "id": "styles",
        "type": "create_file",
        "name": "Write the styles",
        "description": "CSS",
        "estimatedDuration": 5,
        "priority": 3,
        "input": {"targetPath": "src/styles.css", "dependencies": ["setup"]},
    },
    {
        "id": "hero",
        "type": "create_component",
        "name": "Build the hero",
        "description": "Hero component",
        "estimatedDuration": 20,
        "priority": 2,
        "input": {"targetPath": "src/components/Hero.tsx", "dependencies": ["setup"]},
    },
    {
        "id": "flaky",
        "type": "create_file",
        "name": "Call the flaky service",
        "description": "fails three times",
        "estimatedDuration": 5,
        "priority": 4,
        "input": {"targetPath": "src/flaky.ts", "dependencies": ["setup"]},
    },
    {
        "id": "page",
        "type": "create_component",
        "name": "Assemble the page",
        "description": "App.tsx",
        "estimatedDuration": 10,
        "priority": 5,
        "input": {"targetPath": "src/App.tsx", "dependencies": ["hero", "styles", "flaky"]},
    },
]
HERO = 'import { useState } from "react";\n\nexport function Hero() {\n  const [n, setN] = useState(0);\n  return <h1 onClick={() => setN(n + 1)}>Hello {n}</h1>;\n}\n'
SCRIPT: dict[str, Any] = {
    "plan": {"tasks": PLAN_TASKS, "chunk_chars": 40, "chunk_delay_ms": 45},
    "default_task": {"delay_ms": 250},
    "tasks": {
        "flaky": {"delay_ms": 0, "fail_attempts": 3},
        "hero": {"files": [{"path": "src/components/Hero.tsx", "content": HERO}]},
    },
}


def _missing() -> list[str]:
    missing = []
    if not CHROMIUM.exists():
        missing.append(f"{CHROMIUM} (apt-get install -y chromium)")
    if not (WEB / "dist" / "index.html").is_file():
        missing.append("web/dist (npm --prefix web ci && npm --prefix web run build)")
    if not (WEB / "node_modules" / "axe-core").is_dir():
        missing.append("web/node_modules (npm --prefix web ci)")
    try:
        import playwright  # noqa: F401
    except ImportError:
        missing.append("playwright (pip install -e '.[dev]')")
    return missing


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    missing = _missing()
    if not missing or os.environ.get("STEPWISE_REQUIRE_BROWSER") == "1":
        return  # required (scripts/test.sh): a missing piece fails the tests that need it
    here = Path(__file__).parent
    for item in items:
        if Path(str(item.fspath)).is_relative_to(here):
            item.add_marker(pytest.mark.skip(reason="browser tests need: " + "; ".join(missing)))


class Server:
    def __init__(self, base: str) -> None:
        self.base = base
        self.headers = {"Authorization": f"Bearer {TOKEN}"}
        # Builds several tests only read once they have ended: started as soon as the server is up.
        self.early: dict[str, str] = {}

    def start(self, prompt: str, **fields: Any) -> str:
        answer = httpx.post(f"{self.base}/builds", json={"prompt": prompt, **fields}, headers=self.headers)
        assert answer.status_code == 202, answer.text
        return str(answer.json()["buildId"])

    def events(self, build_id: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        after = 0
        while True:
            page = httpx.get(
                f"{self.base}/builds/{build_id}/events", params={"after": after, "limit": 1000}, headers=self.headers
            ).json()
            out += page["events"]
            if len(page["events"]) < 1000:
                return out
            after = out[-1]["seq"]

    def build(self, build_id: str) -> dict[str, Any]:
        return dict(httpx.get(f"{self.base}/builds/{build_id}", headers=self.headers).json())

    def wait_status(self, build_id: str, statuses: set[str], timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            build = self.build(build_id)
            if build["status"] in statuses:
                return build
            time.sleep(0.1)
        raise AssertionError(f"build {build_id} never reached {statuses}: {self.build(build_id)['status']}")


@pytest.fixture(scope="session")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    with serving(
        tmp_path_factory.mktemp("browser"),
        tokens={TOKEN: "browser-user"},
        script=SCRIPT,
        env={"TASK_MAX_ATTEMPTS": "3", "TASK_RETRY_BASE_SECONDS": "0.05", "TASK_CACHE_TTL_SECONDS": "0"},
    ) as serve:
        ready = Server(serve.base)
        # Builds several tests only read once they have ended: started as soon as the server is up.
        ready.early = {"retry": ready.start("Retry me from the page"), "finished": ready.start("A finished build")}
        yield ready


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=["--no-sandbox"])
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: Any, request: pytest.FixtureRequest) -> Iterator[Any]:
    """A fresh tab (1400x900) under the app's own CSP; an uncaught error or a CSP violation fails the
    test; a screenshot is kept afterwards."""
    context = browser.new_context(viewport={"width": 1400, "height": 900})
    context.set_default_timeout(20_000)
    tab = context.new_page()
    errors: list[str] = []
    tab.on("pageerror", lambda exc: errors.append(str(exc)))
    tab.on("console", lambda m: errors.append(m.text) if "Content Security Policy" in m.text else None)
    yield tab
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    try:
        tab.screenshot(path=str(ARTIFACTS / f"{request.node.name}.png"), full_page=True)
    finally:
        context.close()
    assert not errors, f"uncaught errors in the page: {errors}"


@pytest.fixture(scope="session")
def axe_source() -> str:
    return (WEB / "node_modules" / "axe-core" / "axe.min.js").read_text()
