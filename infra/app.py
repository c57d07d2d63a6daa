"""CDK entry point: `python -m infra.app` (what cdk.json runs) or `npx aws-cdk@2.1148.1 synth`.

`-c stage=<name>` (default `dev`, from cdk.json) picks `infra/stages/<name>.json`; the stage names
the stack, pins its account and region when it sets them, and a production stage turns on
termination and deletion protection. Synthesizing needs no AWS credentials; building the dependency
layer needs the package index (see infra/README.md).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from aws_cdk import App, Environment

from infra.account import API_GATEWAY_ACCOUNT_STACK, ApiGatewayAccountStack
from infra.config import STAGES_DIR, StackConfig
from infra.nag import enable_nag
from infra.stack import StepwiseStack

CDK_JSON = Path(__file__).resolve().parent.parent / "cdk.json"


def feature_flags(cdk_json: Path = CDK_JSON) -> dict[str, Any]:
    """The feature flags set in cdk.json, so `python -m infra.app` (and the tests) synthesize exactly
    what the CDK CLI does."""
    context = json.loads(cdk_json.read_text()).get("context", {})
    return {k: v for k, v in context.items() if k.startswith("@aws-cdk")}


def build_app(
    context: Mapping[str, Any] | None = None,
    *,
    outdir: str | None = None,
    nag: bool = True,
    stages_dir: Path = STAGES_DIR,
) -> tuple[App, StepwiseStack]:
    """The app with its stage's stack; `context` adds to (and wins over) cdk.json / `-c` values."""
    app = App(context=feature_flags(), post_cli_context=dict(context or {}), outdir=outdir)
    config = StackConfig.from_context(app.node.try_get_context, stages_dir=stages_dir)
    deployment = config.deployment
    env = Environment(account=deployment.account, region=deployment.region) if deployment.account else None
    stack = StepwiseStack(
        app,
        deployment.stack_name,
        config=config,
        env=env,
        termination_protection=deployment.production,
        description=f"Stepwise ({config.stage}): streamed AI task plans executed as a DAG on AWS serverless",
    )
    if deployment.api_cloud_watch_role:
        # One per account and region, shared by every stage deployed there (same name, same template).
        account = ApiGatewayAccountStack(app, API_GATEWAY_ACCOUNT_STACK, env=env)
        stack.add_stack_dependency(account, "API Gateway logging needs the account's CloudWatch role first")
    if nag:
        enable_nag(app)
    return app, stack


def main() -> None:
    app, _ = build_app()
    app.synth()


if __name__ == "__main__":
    main()
