"""cdk-nag (AwsSolutions) on every synth, and the one way this app acknowledges a finding."""

from __future__ import annotations

from aws_cdk import Acknowledgment, App, Stack, Token, Validations
from cdk_nag import AwsSolutionsChecks
from constructs import IConstruct


def enable_nag(app: App) -> None:
    """Run the AwsSolutions pack on synth; any unacknowledged finding fails the synth."""
    Validations.of(app).add_plugins(AwsSolutionsChecks(app))


def acknowledge(scope: IConstruct, rule_id: str, reason: str) -> None:
    """Acknowledge one finding (`AwsSolutions-XYZ` or `AwsSolutions-IAM5[Resource::...]`) on `scope`.

    The reason says why the finding does not apply here; it is kept in the cloud assembly.
    """
    if len(reason) < 30:
        raise ValueError(f"acknowledgement of {rule_id} needs a specific reason, got {reason!r}")
    Validations.of(scope).acknowledge(Acknowledgment(id=f"AwsSolutions::{rule_id}", reason=reason))


def arn_prefix(scope: IConstruct, service: str) -> str:
    """`arn:<partition>:<service>:<region>:<account>` as cdk-nag writes it in a finding's id:
    `<AWS::Region>` for a pseudo parameter, the literal value in a stack with a pinned environment."""
    stack = Stack.of(scope)
    partition, region, account = (
        f"<AWS::{name}>" if Token.is_unresolved(value) else value
        for name, value in (("Partition", stack.partition), ("Region", stack.region), ("AccountId", stack.account))
    )
    return f"arn:{partition}:{service}:{region}:{account}"
