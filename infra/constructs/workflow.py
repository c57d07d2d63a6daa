"""The build state machine (Step Functions Standard) from the one ASL file the local runtime runs.

The definition is inlined (`DefinitionBody.from_string`) so cfn-lint can check it, with the
function ARNs filled in by `DefinitionSubstitutions`. Timeouts come from the execution input, so
the file has no other placeholders.
"""

from __future__ import annotations

import re
from pathlib import Path

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_iam as iam
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from aws_cdk import aws_stepfunctions as sfn
from constructs import Construct

from infra.nag import acknowledge
from shared import constants as c

ASL_PATH = Path(__file__).resolve().parent.parent / "statemachine.asl.json"
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z0-9_]+)\}")


def asl_placeholders(text: str) -> set[str]:
    return set(_PLACEHOLDER.findall(text))


class Workflow(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        plan: lambda_.IFunction,
        dispatch: lambda_.IFunction,
        log_retention: logs.RetentionDays,
        production: bool = False,
        asl_path: Path = ASL_PATH,
    ) -> None:
        super().__init__(scope, construct_id)
        definition = asl_path.read_text()
        substitutions = {
            c.ASL_PLAN_FUNCTION: plan.function_arn,
            c.ASL_DISPATCH_FUNCTION: dispatch.function_arn,
        }
        missing = asl_placeholders(definition) - set(substitutions)
        if missing:
            raise ValueError(f"{asl_path.name} has placeholders infra does not fill: {sorted(missing)}")

        stack = Stack.of(self)
        self.log_group = logs.LogGroup(
            self,
            "Logs",
            # The /aws/vendedlogs/ prefix keeps CloudWatch's resource policy small (AWS guidance).
            log_group_name=f"/aws/vendedlogs/states/{stack.stack_name}-build",
            retention=log_retention,
            # Named (for the vendedlogs prefix), so it must go with the stack or a re-deploy collides.
            removal_policy=RemovalPolicy.DESTROY,
        )
        # Only the two functions the ASL calls; no lambda:InvokeFunction on versions or aliases.
        self.role = iam.Role(
            self,
            "Role",
            assumed_by=iam.ServicePrincipal("states.amazonaws.com"),
            description="Stepwise build state machine",
        )
        self.role.add_to_policy(
            iam.PolicyStatement(
                actions=["lambda:InvokeFunction"],
                resources=[plan.function_arn, dispatch.function_arn],
            )
        )
        self.state_machine = sfn.StateMachine(
            self,
            "StateMachine",
            state_machine_type=sfn.StateMachineType.STANDARD,
            definition_body=sfn.DefinitionBody.from_string(definition),
            definition_substitutions=substitutions,
            role=self.role,
            tracing_enabled=True,
            # Execution data holds prompts, plans and generated code: logged in full only outside
            # production; production logs errors, without their inputs and outputs.
            logs=sfn.LogOptions(
                destination=self.log_group,
                level=sfn.LogLevel.ERROR if production else sfn.LogLevel.ALL,
                include_execution_data=not production,
            ),
        )
        if production:
            acknowledge(
                self.state_machine,
                "AwsSolutions-SF1",
                "Production logs ERROR events without execution data: full event logs would copy every "
                "prompt, plan and generated file into CloudWatch Logs; other stages log ALL.",
            )
        acknowledge(
            self.role,
            "AwsSolutions-IAM5[Resource::*]",
            "Step Functions log delivery (logs:*LogDelivery, DescribeResourcePolicies) and X-Ray "
            "tracing actions do not support resource-level permissions.",
        )
