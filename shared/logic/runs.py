"""A build's runs: the Step Functions executions that carry it, and which one is its own.

Starting a run is two writes, the execution and the commit that makes it the build's run (the
build item of a new build; `build_resumed` when a retry or skip re-opens an ended build). The API
starts the execution first, under a name never used before, and then commits that name as the
build's `runId` (conditionally: of two re-opens, one commits). So every committed run has an
execution, and an execution whose commit never landed (its API call died in between, or lost the
race) ends at its Plan step without touching the build: Plan waits for the commit as long as the
API call that started it can still be alive (its function's time limit after the start), then
answers `superseded`. Finalize of a run that is no longer the build's run changes nothing.
"""

from __future__ import annotations

import secrets

from shared import limits
from shared.logic.services import Services
from shared.models.records import BuildRecord

# Past the API function's time limit its call can no longer commit; the margin covers the clocks
# of two hosts and a write sent just before the limit.
COMMIT_MARGIN_S = 5.0
_POLL_S = (0.02, 0.5)  # the wait for a run's commit looks again after 20 ms, backing off to 500 ms


def commit_wait_s() -> float:
    """How long after its execution started a run's commit can still land."""
    return limits.function_timeout_s("api", 0) + COMMIT_MARGIN_S


def first_run(build_id: str) -> str:
    """The first run's execution is named by the build's id."""
    return build_id


def new_run(build_id: str, run: int) -> str:
    """A re-opened build's execution name for run `run`: unique, so a name started by a call that
    died is never taken for a later run's (Step Functions keeps names for 90 days, ≤ 80 chars)."""
    return f"{build_id}-run{run}-{secrets.token_hex(4)}"


def legacy_run(build_id: str, run: int) -> str:
    """The name runs had before they were unique: <id> for the first run, <id>-run<N> after."""
    return build_id if run <= 1 else f"{build_id}-run{run}"


def current_run(build: BuildRecord) -> str:
    """The execution that carries the build now."""
    return build.runId or legacy_run(build.buildId, build.runs)


def run_number(name: str, build_id: str) -> int:
    """The run number a name of this build's carries (1 for the first run)."""
    rest = name[len(build_id) :]
    if not rest.startswith("-run"):
        return 1
    digits = rest[4:].split("-", 1)[0]
    return int(digits) if digits.isdigit() else 1


def wait_for_own_run(svc: Services, build_id: str, run: str, requested_ms: int | None) -> BuildRecord | None:
    """The build once `run` is its run (its commit landed), or None when it never will be: the
    build moved past that run number under another name, or the commit's deadline (the API call's
    time limit after `requested_ms`, when it started the run) has passed."""
    from shared.backoff import exponential_backoff_s

    now = svc.clock.time()
    deadline = (requested_ms / 1000 if requested_ms else now) + commit_wait_s()
    number = run_number(run, build_id)
    tries = 0
    while True:
        build = svc.builds.get(build_id)
        if build is not None:
            if current_run(build) == run:
                return build
            if build.runs >= number:  # that number went to another run's commit
                return None
        if svc.clock.time() >= deadline:
            return None
        tries += 1
        svc.clock.sleep(exponential_backoff_s(tries, base=_POLL_S[0], cap=_POLL_S[1], jitter=(0.5, 1.0)))
