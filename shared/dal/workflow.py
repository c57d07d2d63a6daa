"""Step Functions: start a build's execution (named by buildId) and answer its task tokens."""

from __future__ import annotations

import json
from typing import Any

from shared.dal.aws import client
from shared.dal.vendor_errors import error_code


class Workflow:
    def __init__(self, state_machine_arn: str) -> None:
        self.arn = state_machine_arn

    def start(self, build_id: str, payload: dict[str, Any]) -> str:
        try:
            resp = client("stepfunctions").start_execution(
                stateMachineArn=self.arn, name=build_id, input=json.dumps(payload)
            )
            return str(resp["executionArn"])
        except Exception as exc:
            if error_code(exc) == "ExecutionAlreadyExists":
                return self.execution_arn(build_id)
            raise

    def execution_arn(self, build_id: str) -> str:
        return self.arn.replace(":stateMachine:", ":execution:") + f":{build_id}"

    def stop(self, build_id: str, cause: str) -> None:
        try:
            client("stepfunctions").stop_execution(
                executionArn=self.execution_arn(build_id), error="BuildCancelled", cause=cause
            )
        except Exception as exc:
            if error_code(exc) not in ("ExecutionDoesNotExist", "ExecutionNotFound"):
                raise

    def succeed(self, token: str, output: dict[str, Any]) -> bool:
        """Return the token; False if it was already used or timed out (idempotent)."""
        try:
            client("stepfunctions").send_task_success(taskToken=token, output=json.dumps(output))
            return True
        except Exception as exc:
            if error_code(exc) in ("TaskTimedOut", "InvalidToken", "TaskDoesNotExist"):
                return False
            raise

    def fail(self, token: str, error: str, cause: str) -> bool:
        try:
            client("stepfunctions").send_task_failure(taskToken=token, error=error, cause=cause[:32000])
            return True
        except Exception as exc:
            if error_code(exc) in ("TaskTimedOut", "InvalidToken", "TaskDoesNotExist"):
                return False
            raise
