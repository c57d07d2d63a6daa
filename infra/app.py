"""CDK entry point: `python -m infra.app` (what cdk.json runs) or `npx aws-cdk@2.1148.1 synth`.

Synthesizes offline: the stack is environment-agnostic and needs no AWS credentials; the dependency
layer is bundled locally with pip (no Docker).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from aws_cdk import App

from infra.config import StackConfig
from infra.nag import enable_nag
from infra.stack import StepwiseStack

DEFAULT_STACK_NAME = "Stepwise"

# Feature flags this app relies on, set here so the Python entry point and the CLI agree.
FEATURE_FLAGS: dict[str, Any] = {
    "@aws-cdk/aws-s3:serverAccessLogsUseBucketPolicy": True,
    "@aws-cdk/aws-iam:minimizePolicies": True,
    "@aws-cdk/aws-apigateway:disableCloudWatchRole": True,
}


def build_app(
    context: Mapping[str, Any] | None = None,
    *,
    outdir: str | None = None,
    nag: bool = True,
) -> tuple[App, StepwiseStack]:
    """The app with its one stack; `context` adds to (and wins over) cdk.json / `-c` values."""
    app = App(context=dict(FEATURE_FLAGS), post_cli_context=dict(context or {}), outdir=outdir)
    config = StackConfig.from_context(app.node.try_get_context)
    stack_name = app.node.try_get_context("stackName") or DEFAULT_STACK_NAME
    stack = StepwiseStack(
        app,
        stack_name,
        config=config,
        description="Stepwise: streamed AI task plans executed as a DAG on AWS serverless",
    )
    if nag:
        enable_nag(app)
    return app, stack


def main() -> None:
    app, _ = build_app()
    app.synth()


if __name__ == "__main__":
    main()
