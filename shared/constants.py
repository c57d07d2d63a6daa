"""Names shared by the code and the infrastructure, written once so they cannot drift.

`infra/` imports these to set each function's environment; `shared.settings` reads them.
"""

from __future__ import annotations

from typing import Final

# --- user-facing configuration (docs/configuration.md) -----------------------------------------
AI_PROVIDER: Final = "AI_PROVIDER"
ANTHROPIC_API_KEY: Final = "ANTHROPIC_API_KEY"
ANTHROPIC_MODEL: Final = "ANTHROPIC_MODEL"
ANTHROPIC_BASE_URL: Final = "ANTHROPIC_BASE_URL"
BEDROCK_MODEL_ID: Final = "BEDROCK_MODEL_ID"
OPENAI_API_KEY: Final = "OPENAI_API_KEY"
OPENAI_BASE_URL: Final = "OPENAI_BASE_URL"
OPENAI_MODEL: Final = "OPENAI_MODEL"
STEPWISE_MOCK_SCRIPT: Final = "STEPWISE_MOCK_SCRIPT"
REQUIRE_PLAN_APPROVAL: Final = "REQUIRE_PLAN_APPROVAL"
PLAN_APPROVAL_TIMEOUT_SECONDS: Final = "PLAN_APPROVAL_TIMEOUT_SECONDS"
ALLOW_LINEAR_FALLBACK: Final = "ALLOW_LINEAR_FALLBACK"
# Start a task while the plan still streams, once its JSON closed and its dependencies completed.
STREAM_EXECUTION: Final = "STREAM_EXECUTION"
TASK_TIMEOUT_SECONDS: Final = "TASK_TIMEOUT_SECONDS"
TASK_MAX_ATTEMPTS: Final = "TASK_MAX_ATTEMPTS"
BUILD_TIMEOUT_SECONDS: Final = "BUILD_TIMEOUT_SECONDS"
TASK_CACHE_TTL_SECONDS: Final = "TASK_CACHE_TTL_SECONDS"
WEBHOOK_URL: Final = "WEBHOOK_URL"
WEBHOOK_SECRET: Final = "WEBHOOK_SECRET"
WEBHOOK_ALLOWED_HOSTS: Final = "WEBHOOK_ALLOWED_HOSTS"
WEBHOOK_MAX_ATTEMPTS: Final = "WEBHOOK_MAX_ATTEMPTS"
WEBHOOK_BACKOFF_BASE_SECONDS: Final = "WEBHOOK_BACKOFF_BASE_SECONDS"
WEBHOOK_BACKOFF_MAX_SECONDS: Final = "WEBHOOK_BACKOFF_MAX_SECONDS"
STEPWISE_LOCAL_TOKENS: Final = "STEPWISE_LOCAL_TOKENS"
RECORD_TTL_DAYS: Final = "RECORD_TTL_DAYS"
LOG_LEVEL: Final = "LOG_LEVEL"
# The attribute (epoch seconds) after which DynamoDB's TTL deletes a build, task, event or cache entry.
TTL_ATTRIBUTE: Final = "expiresAt"
BUILDS_BY_OWNER_INDEX: Final = "byOwner"  # the builds table's index by owner, newest first
CONNECTIONS_BY_CONNECTION_INDEX: Final = "byConnection"  # the connections table's subscriptions by connection
STEPWISE_CORS_ORIGINS: Final = "STEPWISE_CORS_ORIGINS"  # origins a browser may call the API from ("*" locally)

# --- extensions of the original design (also in docs/configuration.md) -------------------------
TASK_RETRY_BASE_SECONDS: Final = "TASK_RETRY_BASE_SECONDS"  # task retry backoff base (default 1)
MAX_PLAN_TASKS: Final = "MAX_PLAN_TASKS"  # tasks a plan may have (default and ceiling 1,000)

# --- wiring: where the resources are (set by CDK on AWS, by local/ on the laptop) -------------
BUILDS_TABLE: Final = "BUILDS_TABLE"
TASKS_TABLE: Final = "TASKS_TABLE"
EVENTS_TABLE: Final = "EVENTS_TABLE"
CACHE_TABLE: Final = "CACHE_TABLE"
IDEMPOTENCY_TABLE: Final = "IDEMPOTENCY_TABLE"
FILES_BUCKET: Final = "FILES_BUCKET"
TASKS_QUEUE_URL: Final = "TASKS_QUEUE_URL"
TASK_FINISHED_QUEUE_URL: Final = "TASK_FINISHED_QUEUE_URL"
WEBHOOK_QUEUE_URL: Final = "WEBHOOK_QUEUE_URL"
WEBHOOK_DLQ_URL: Final = "WEBHOOK_DLQ_URL"  # refused deliveries are dead-lettered here at once
STATE_MACHINE_ARN: Final = "STATE_MACHINE_ARN"
WEBHOOK_SECRET_ARN: Final = "WEBHOOK_SECRET_ARN"  # Secrets Manager secret holding WEBHOOK_SECRET
PROVIDER_SECRET_ARN: Final = "PROVIDER_SECRET_ARN"  # Secrets Manager secret holding provider keys
CONNECTIONS_TABLE: Final = "CONNECTIONS_TABLE"  # WebSocket connections and their subscriptions
WEBSOCKET_CALLBACK_URL: Final = "WEBSOCKET_CALLBACK_URL"  # https://{api}.execute-api.{region}.amazonaws.com/{stage}
COGNITO_ISSUER: Final = "COGNITO_ISSUER"  # https://cognito-idp.{region}.amazonaws.com/{userPoolId}
COGNITO_CLIENT_ID: Final = "COGNITO_CLIENT_ID"  # the app client whose tokens open a WebSocket
# The pool's hosted UI (https://{prefix}.auth.{region}.amazoncognito.com). With the two above it makes
# `stepwise serve` sign its dashboard in through that pool and accept the pool's JWTs (opt-in).
COGNITO_DOMAIN: Final = "COGNITO_DOMAIN"

# Powertools
POWERTOOLS_SERVICE_NAME: Final = "POWERTOOLS_SERVICE_NAME"
POWERTOOLS_METRICS_NAMESPACE: Final = "POWERTOOLS_METRICS_NAMESPACE"
METRICS_NAMESPACE: Final = "Stepwise"

# The five functions. infra/ and local/ both build their function set from this mapping.
FUNCTION_HANDLERS: Final[dict[str, str]] = {
    "api": "functions.api.handler.handler",
    "plan": "functions.plan.handler.handler",
    "dispatch": "functions.dispatch.handler.handler",
    "task": "functions.task.handler.handler",
    "webhook": "functions.webhook.handler.handler",
}

# The WebSocket API's functions (AWS only; `stepwise serve` answers /ws itself).
WEBSOCKET_FUNCTION_HANDLERS: Final[dict[str, str]] = {
    "ws_authorizer": "functions.ws_authorizer.handler.handler",
    "ws_connection": "functions.ws_connection.handler.handler",
    "ws_broadcast": "functions.ws_broadcast.handler.handler",
}

# Substitution keys in the ASL file (`${...}`), filled by CDK and by the local runtime.
ASL_PLAN_FUNCTION: Final = "PlanFunctionArn"
ASL_DISPATCH_FUNCTION: Final = "DispatchFunctionArn"
ASL_BUILD_TIMEOUT: Final = "BuildTimeoutSeconds"
ASL_APPROVAL_TIMEOUT: Final = "ApprovalTimeoutSeconds"
