"""The REST API (docs/api.md) in front of the `api` function.

- Auth: a Cognito user pool made here; the REST API's Cognito authorizer validates the ID token in
  `Authorization: Bearer <token>` and hands the claims (`sub` is the owner id) to the function in
  `requestContext.authorizer.claims`. Every method is authorized except `GET /openapi.json` and the
  CORS preflights. (A REST API can only use a Cognito or a Lambda authorizer; an arbitrary OIDC
  issuer/audience would need a Lambda authorizer or an HTTP API JWT authorizer.)
- Explicit routes, not a greedy proxy: unknown paths never reach the function, and each route is
  visible (and authorized) in the template. A method a path does not have answers 405 with `Allow`
  from the gateway itself (an `ANY` mock on each resource), never reaching the function.
- CORS: preflights are answered by the gateway for the frontend origins, every function answer
  carries `Access-Control-Allow-Origin` (the function reads STEPWISE_CORS_ORIGINS), and so does
  every gateway-made error.
- Request validation at the edge: request parameters everywhere and "body is a JSON object" on the
  POST routes with a body, so malformed JSON is a 400 before any code runs. Field rules stay in the
  function's pydantic models (one source of truth, 422 with details).
- Gateway-generated errors use the contract's error shape and carry CORS headers.
"""

from __future__ import annotations

import json

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_apigateway as apigw
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_lambda as lambda_
from aws_cdk import aws_logs as logs
from constructs import Construct

from infra.nag import acknowledge
from shared import cors

CORS_HEADERS = list(cors.ALLOW_HEADERS)

# One JSON object per request; `sub` is the caller (Cognito claims), never the token itself.
ACCESS_LOG_FIELDS = {
    "requestId": "$context.requestId",
    "ip": "$context.identity.sourceIp",
    "requestTime": "$context.requestTimeEpoch",
    "method": "$context.httpMethod",
    "resourcePath": "$context.resourcePath",
    "path": "$context.path",
    "status": "$context.status",
    "protocol": "$context.protocol",
    "responseLength": "$context.responseLength",
    "sub": "$context.authorizer.claims.sub",
    "latencyMs": "$context.responseLatency",
    "integrationLatencyMs": "$context.integrationLatency",
    "error": "$context.error.message",
}

# (path, method, body model) for every authorized route of docs/api.md#routes.
ROUTES: tuple[tuple[str, str, bool], ...] = (
    ("/builds", "POST", True),
    ("/builds", "GET", False),
    ("/builds/{buildId}", "GET", False),
    ("/builds/{buildId}/events", "GET", False),
    ("/builds/{buildId}/approval", "POST", True),
    ("/builds/{buildId}/cancel", "POST", False),
    ("/builds/{buildId}/tasks/{taskId}/retry", "POST", False),
    ("/builds/{buildId}/tasks/{taskId}/skip", "POST", False),
    ("/builds/{buildId}/files", "GET", False),
    ("/builds/{buildId}/files/{path+}", "GET", False),
)
PUBLIC_ROUTES: tuple[tuple[str, str], ...] = (("/openapi.json", "GET"), ("/docs", "GET"))
QUERY_PARAMETERS: dict[tuple[str, str], tuple[str, ...]] = {
    ("/builds", "GET"): ("limit", "cursor"),
    ("/builds/{buildId}/events", "GET"): ("after", "limit", "wait"),
}

# Gateway-made responses in the contract's error shape: (type, status, code, message).
_GATEWAY_ERRORS: tuple[tuple[apigw.ResponseType, str | None, str, str | None], ...] = (
    (apigw.ResponseType.UNAUTHORIZED, "401", "unauthorized", "Missing or invalid bearer token"),
    (apigw.ResponseType.ACCESS_DENIED, "401", "unauthorized", "Missing or invalid bearer token"),
    (apigw.ResponseType.MISSING_AUTHENTICATION_TOKEN, "404", "not_found", "No such route"),
    (apigw.ResponseType.BAD_REQUEST_BODY, "400", "bad_request", "The body must be a JSON object"),
    (apigw.ResponseType.BAD_REQUEST_PARAMETERS, "400", "bad_request", "Invalid request parameters"),
    (apigw.ResponseType.REQUEST_TOO_LARGE, "413", "too_large", "Request too large"),
    (apigw.ResponseType.THROTTLED, "429", "throttled", "Too many requests"),
    (apigw.ResponseType.QUOTA_EXCEEDED, "429", "throttled", "Too many requests"),
    (apigw.ResponseType.DEFAULT_4_XX, None, "request_error", None),
    (apigw.ResponseType.DEFAULT_5_XX, None, "internal", "Internal error"),
)


class Api(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        handler: lambda_.IFunction,
        frontend_origins: list[str],
        rate_limit: float,
        burst_limit: int,
        log_retention: logs.RetentionDays,
        callback_urls: tuple[str, ...],
        logout_urls: tuple[str, ...],
        auth_domain_prefix: str | None = None,
        deletion_protection: bool = False,
    ) -> None:
        super().__init__(scope, construct_id)

        # --- identity -----------------------------------------------------------------------------
        self.user_pool = cognito.UserPool(
            self,
            "Users",
            self_sign_up_enabled=False,
            sign_in_aliases=cognito.SignInAliases(email=True),
            auto_verify=cognito.AutoVerifiedAttrs(email=True),
            password_policy=cognito.PasswordPolicy(
                min_length=12,
                require_lowercase=True,
                require_uppercase=True,
                require_digits=True,
                require_symbols=True,
                temp_password_validity=Duration.days(3),
            ),
            mfa=cognito.Mfa.REQUIRED,
            mfa_second_factor=cognito.MfaSecondFactor(otp=True, sms=False),
            account_recovery=cognito.AccountRecovery.EMAIL_ONLY,
            deletion_protection=deletion_protection,
            removal_policy=RemovalPolicy.RETAIN,
        )
        acknowledge(
            self.user_pool,
            "AwsSolutions-COG8",
            "Threat protection needs the Cognito Plus feature plan (billed per MAU); users are "
            "admin-created only and MFA (TOTP) is required, so it is left to the operator.",
        )
        # A public client (no secret: it runs in a browser). Everything CDK would default is spelled
        # out: SRP sign-in, and the authorization-code grant only (the dashboard uses it with PKCE),
        # no implicit grant, OpenID scopes only, redirects only to the stage's own URLs.
        self.client = self.user_pool.add_client(
            "Frontend",
            generate_secret=False,
            auth_flows=cognito.AuthFlow(user_srp=True),
            o_auth=cognito.OAuthSettings(
                flows=cognito.OAuthFlows(authorization_code_grant=True, implicit_code_grant=False),
                scopes=[cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL, cognito.OAuthScope.PROFILE],
                callback_urls=list(callback_urls),
                logout_urls=list(logout_urls),
            ),
            supported_identity_providers=[cognito.UserPoolClientIdentityProvider.COGNITO],
            prevent_user_existence_errors=True,
            id_token_validity=Duration.hours(1),
            access_token_validity=Duration.hours(1),
            refresh_token_validity=Duration.days(30),
        )
        # The hosted sign-in pages the authorization-code flow redirects to (prefix unique per region).
        self.domain = (
            self.user_pool.add_domain(
                "SignIn", cognito_domain=cognito.CognitoDomainOptions(domain_prefix=auth_domain_prefix)
            )
            if auth_domain_prefix
            else None
        )
        self.authorizer = apigw.CognitoUserPoolsAuthorizer(
            self,
            "Authorizer",
            cognito_user_pools=[self.user_pool],
            identity_source=apigw.IdentitySource.header("Authorization"),
            results_cache_ttl=Duration.minutes(5),
        )

        # --- the API ------------------------------------------------------------------------------
        self.access_logs = logs.LogGroup(self, "AccessLogs", retention=log_retention)
        self.rest_api = apigw.RestApi(
            self,
            "RestApi",
            description="Stepwise HTTP API",
            # The account-level logging role lives in its own stack (infra/account.py): one per
            # account and region, not one per stack.
            cloud_watch_role=False,
            endpoint_types=[apigw.EndpointType.REGIONAL],
            deploy_options=apigw.StageOptions(
                stage_name="v1",
                throttling_rate_limit=rate_limit,
                throttling_burst_limit=burst_limit,
                tracing_enabled=True,
                metrics_enabled=True,
                logging_level=apigw.MethodLoggingLevel.ERROR,
                data_trace_enabled=False,
                access_log_destination=apigw.LogGroupLogDestination(self.access_logs),
                access_log_format=apigw.AccessLogFormat.custom(json.dumps(ACCESS_LOG_FIELDS)),
            ),
            default_cors_preflight_options=apigw.CorsOptions(
                allow_origins=frontend_origins,
                allow_methods=["GET", "POST", "OPTIONS"],
                allow_headers=CORS_HEADERS,
                expose_headers=cors.EXPOSE_HEADERS,
                max_age=Duration.hours(1),
            ),
        )
        acknowledge(
            self.rest_api,
            "AwsSolutions-APIG3",
            "No WAF web ACL by default (fixed monthly cost): every data route needs a Cognito "
            "token and the stage is throttled; attach a web ACL to the stage if exposed widely.",
        )

        # One origin: named in every gateway-made error. Several: the request's Origin is echoed (a
        # gateway response cannot choose among origins); these answers hold no data.
        allow_origin = f"'{frontend_origins[0]}'" if len(frontend_origins) == 1 else "method.request.header.Origin"
        for response_type, status, code, message in _GATEWAY_ERRORS:
            # `$context.error.messageString` is API Gateway's own message, already JSON-quoted.
            text = json.dumps(message) if message else "$context.error.messageString"
            template = f'{{"error": {{"code": {json.dumps(code)}, "message": {text}}}}}'
            headers = {
                "Access-Control-Allow-Origin": allow_origin,
                "Access-Control-Allow-Headers": "'" + ",".join(CORS_HEADERS) + "'",
                "Access-Control-Expose-Headers": "'" + ",".join(cors.EXPOSE_HEADERS) + "'",
            }
            if len(frontend_origins) > 1:
                headers["Vary"] = "'Origin'"
            self.rest_api.add_gateway_response(
                f"Gateway{response_type.response_type}",
                type=response_type,
                status_code=status,
                response_headers=headers,
                templates={"application/json": template},
            )

        self.validator = self.rest_api.add_request_validator(
            "Validator",
            validate_request_parameters=True,
            validate_request_body=True,
        )
        json_object = self.rest_api.add_model(
            "JsonObject",
            content_type="application/json",
            schema=apigw.JsonSchema(schema=apigw.JsonSchemaVersion.DRAFT4, type=apigw.JsonSchemaType.OBJECT),
            description="Any JSON object: field rules are checked by the function (422 with details)",
        )

        integration = apigw.LambdaIntegration(handler, proxy=True, allow_test_invoke=False)
        self.methods: dict[tuple[str, str], apigw.Method] = {}
        for path, verb, has_body in ROUTES:
            resource = self._resource(path)
            params = {f"method.request.path.{p}": True for p in _path_params(path)}
            params.update({f"method.request.querystring.{q}": False for q in QUERY_PARAMETERS.get((path, verb), ())})
            self.methods[(path, verb)] = resource.add_method(
                verb,
                integration,
                authorizer=self.authorizer,
                authorization_type=apigw.AuthorizationType.COGNITO,
                request_validator=self.validator,
                request_parameters=params or None,
                request_models={"application/json": json_object} if has_body else None,
            )
        for path, verb in PUBLIC_ROUTES:
            method = self._resource(path).add_method(verb, integration, authorization_type=apigw.AuthorizationType.NONE)
            self.methods[(path, verb)] = method
            for rule in ("AwsSolutions-APIG4", "AwsSolutions-COG4"):
                acknowledge(
                    method,
                    rule,
                    f"{verb} {path} is public by contract: it serves the API's OpenAPI document "
                    "(or Swagger UI over it), which holds no user data.",
                )
        self._method_not_allowed(allow_origin)

    def _method_not_allowed(self, allow_origin: str) -> None:
        """`ANY` on every resource that has methods: a mock answering 405 with `Allow` (the explicit
        methods and OPTIONS take precedence), so an undeclared method never reaches the function."""
        by_path: dict[str, set[str]] = {}
        for path, verb in self.methods:
            by_path.setdefault(path, set()).add(verb)
        for path, verbs in sorted(by_path.items()):
            allow = ", ".join(sorted({*verbs, "OPTIONS"}))
            body = json.dumps(
                {"error": {"code": "method_not_allowed", "message": f"This path answers {allow} only."}}
            )
            mock = apigw.MockIntegration(
                request_templates={"application/json": '{"statusCode": 405}'},
                passthrough_behavior=apigw.PassthroughBehavior.WHEN_NO_TEMPLATES,
                integration_responses=[
                    apigw.IntegrationResponse(
                        status_code="405",
                        response_parameters={
                            "method.response.header.Allow": f"'{allow}'",
                            "method.response.header.Access-Control-Allow-Origin": allow_origin,
                        },
                        response_templates={"application/json": body},
                    )
                ],
            )
            method = self._resource(path).add_method(
                "ANY",
                mock,
                authorization_type=apigw.AuthorizationType.NONE,
                method_responses=[
                    apigw.MethodResponse(
                        status_code="405",
                        response_parameters={
                            "method.response.header.Allow": True,
                            "method.response.header.Access-Control-Allow-Origin": True,
                        },
                    )
                ],
            )
            for rule in ("AwsSolutions-APIG4", "AwsSolutions-COG4"):
                acknowledge(
                    method,
                    rule,
                    "ANY is a gateway mock that answers 405 with Allow for methods the path does not have; "
                    "it reaches no function and returns no data.",
                )

    def _resource(self, path: str) -> apigw.IResource:
        resource: apigw.IResource = self.rest_api.root
        for part in filter(None, path.split("/")):
            resource = resource.get_resource(part) or resource.add_resource(part)
        return resource

    @property
    def url(self) -> str:
        return self.rest_api.url


def _path_params(path: str) -> list[str]:
    return [p.strip("{}").rstrip("+") for p in path.split("/") if p.startswith("{")]
