"""API Gateway's account-level CloudWatch role, in a stack of its own.

API Gateway writes access and execution logs through one role per account and region
(`AWS::ApiGateway::Account`). When each Stepwise stack made its own, the last stack deployed won
and destroying it left the others logging through a deleted role. This stack is the one owner: every
stage deployed to an account and region depends on the same stack name with the same template, so
deploying any stage creates or leaves it unchanged, and destroying a stage never touches it. Both
resources are retained if the stack itself is deleted. Set `apiCloudWatchRole: false` in a stage
when the account's role is managed elsewhere (a landing zone, another team).
"""

from __future__ import annotations

from typing import Any

from aws_cdk import RemovalPolicy, Stack
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_iam as iam
from constructs import Construct

from infra.nag import acknowledge

API_GATEWAY_ACCOUNT_STACK = "StepwiseApiGatewayAccount"


class ApiGatewayAccountStack(Stack):
    def __init__(self, scope: Construct, construct_id: str, **kwargs: Any) -> None:
        super().__init__(
            scope,
            construct_id,
            description="API Gateway's account-wide CloudWatch Logs role (shared by every Stepwise stage)",
            **kwargs,
        )
        self.role = iam.Role(
            self,
            "CloudWatchRole",
            assumed_by=iam.ServicePrincipal("apigateway.amazonaws.com"),
            managed_policies=[
                iam.ManagedPolicy.from_aws_managed_policy_name("service-role/AmazonAPIGatewayPushToCloudWatchLogs")
            ],
            description="API Gateway access and execution logging for this account and region",
        )
        self.role.apply_removal_policy(RemovalPolicy.RETAIN)
        self.settings = apigw.CfnAccount(self, "Account", cloud_watch_role_arn=self.role.role_arn)
        self.settings.apply_removal_policy(RemovalPolicy.RETAIN)
        acknowledge(
            self.role,
            "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/"
            "AmazonAPIGatewayPushToCloudWatchLogs]",
            "API Gateway's account-level logging role is the documented use of this AWS policy; only "
            "apigateway.amazonaws.com can assume the role.",
        )
