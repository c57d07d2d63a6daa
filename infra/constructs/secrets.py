"""Secrets Manager: the webhook signing secret and the AI provider keys.

Webhook secret: Secrets Manager cannot generate `whsec_<base64>` itself, so it generates 44
characters from [A-Za-z0-9]. Every such string is valid base64 (44 is a multiple of 4), so it is a
Standard Webhooks secret with the optional `whsec_` prefix left off (~262 bits of entropy);
`shared.signing.parse_secret` and the public libraries accept it with or without the prefix. The
secret string may hold several secrets separated by spaces or commas while one rotates (primary
first); operators replace it with `aws secretsmanager put-secret-value`.

Provider keys (only for AI_PROVIDER=anthropic or openai; Bedrock uses the functions' IAM role): the
template holds no secret value at all. CloudFormation generates the first value from a template of
empty keys (`{"ANTHROPIC_API_KEY": "", "OPENAI_API_KEY": "", "placeholder": "<random>"}`), once, at
creation; the operator then stores the real keys with `put-secret-value`, and no later deploy
rewrites them (a literal `SecretString` would be re-applied whenever it changed).

Both secrets are retained when the stack is deleted or the resource replaced: a re-created stack
must not silently sign with a new webhook secret or lose the stored keys.
"""

from __future__ import annotations

import json

from aws_cdk import RemovalPolicy
from aws_cdk import aws_secretsmanager as secretsmanager
from constructs import Construct

from infra.nag import acknowledge
from shared import constants as c

WEBHOOK_SECRET_LENGTH = 44
PROVIDER_SECRET_KEYS = (c.ANTHROPIC_API_KEY, c.OPENAI_API_KEY)


class Secrets(Construct):
    def __init__(self, scope: Construct, construct_id: str) -> None:
        super().__init__(scope, construct_id)

        self.webhook = secretsmanager.Secret(
            self,
            "WebhookSigning",
            description="Stepwise webhook signing secret(s): whsec_<base64>, space-separated while rotating",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                password_length=WEBHOOK_SECRET_LENGTH,
                exclude_punctuation=True,
                include_space=False,
                require_each_included_type=True,
            ),
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.webhook,
            "AwsSolutions-SMG4",
            "Rotating the webhook signing secret needs every receiver to add the new key first; "
            "it is rotated by hand (the signer sends one signature per active secret).",
        )

        self.providers = secretsmanager.Secret(
            self,
            "ProviderKeys",
            description="Stepwise AI provider API keys (JSON: ANTHROPIC_API_KEY, OPENAI_API_KEY)",
            generate_secret_string=secretsmanager.SecretStringGenerator(
                secret_string_template=json.dumps({key: "" for key in PROVIDER_SECRET_KEYS}),
                generate_string_key="placeholder",
                exclude_punctuation=True,
                password_length=16,
            ),
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.providers,
            "AwsSolutions-SMG4",
            "Third-party AI provider API keys are issued by the vendor's console; Secrets Manager "
            "cannot rotate them, the operator replaces them.",
        )
