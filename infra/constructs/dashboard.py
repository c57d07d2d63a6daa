"""The web dashboard on AWS: the built app (web/dist) in a private S3 bucket behind CloudFront.

- The bucket is reachable only through the distribution (origin access control, no public access,
  TLS only, encrypted, access-logged).
- Every answer carries security headers: a Content-Security-Policy that lets the app talk only to
  this stack's REST API, its WebSocket API and its Cognito hosted UI, plus HSTS, nosniff,
  frame-ancestors none / DENY and no referrer.
- `config.json` next to the app is written at deploy time with the API URL, the WebSocket URL and
  the Cognito ids, so one build of the app serves every deployment.
- Sign-in is Cognito's hosted UI with the authorization code flow and PKCE: the stack's app client
  gets the code flow (no implicit flow), this distribution as its callback, and a hosted-UI domain.

Two steps, because the API needs the dashboard's origin (CORS) and the dashboard needs the API's
URLs: construct it first (bucket, distribution, `origin`), then `publish(...)` once the APIs exist.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import jsii
from aws_cdk import Annotations, Aws, Duration, Fn, IStableStringProducer, Lazy, RemovalPolicy, Stack, Token
from aws_cdk import aws_cloudfront as cloudfront
from aws_cdk import aws_cloudfront_origins as origins
from aws_cdk import aws_cognito as cognito
from aws_cdk import aws_logs as logs
from aws_cdk import aws_s3 as s3
from aws_cdk import aws_s3_deployment as s3deploy
from constructs import Construct

from infra.nag import acknowledge

DIST = Path(__file__).resolve().parents[2] / "web" / "dist"
ENTRY_FILES = ("index.html", "config.json")
OAUTH_SCOPES = (cognito.OAuthScope.OPENID, cognito.OAuthScope.EMAIL, cognito.OAuthScope.PROFILE)

PLACEHOLDER = (
    "<!doctype html><title>Stepwise</title><p>The dashboard was not built when this stack was "
    "synthesized: run <code>bash scripts/web.sh build</code>, then deploy again.</p>"
)


@jsii.implements(IStableStringProducer)
class _Deferred:
    def __init__(self, produce: Callable[[], str]) -> None:
        self._produce = produce

    def produce(self) -> str:
        return self._produce()


def _asset_objects(stack: Stack) -> str:
    """The CDK asset bucket's objects as cdk-nag names them (pseudo parameters, or a pinned environment)."""
    partition, region, account = (
        f"<AWS::{name}>" if Token.is_unresolved(value) else value
        for name, value in (("Partition", stack.partition), ("Region", stack.region), ("AccountId", stack.account))
    )
    return f"arn:{partition}:s3:::cdk-hnb659fds-assets-{account}-{region}/*"


def _host(url: str) -> str:
    """`https://host/stage/` -> `host` (works on tokens: resolved at deploy)."""
    return Fn.select(2, Fn.split("/", url))


def domain_prefix(stack_name: str) -> str:
    """A hosted-UI domain prefix for this stack: lower case, no reserved words, unique per account."""
    base = re.sub(r"[^a-z0-9-]", "-", stack_name.lower())
    base = re.sub(r"aws|amazon|cognito", "", base).strip("-") or "stepwise"
    return f"{base[:30]}-{Aws.ACCOUNT_ID}"


class Dashboard(Construct):
    def __init__(
        self,
        scope: Construct,
        construct_id: str,
        *,
        access_logs: s3.IBucket,
        assets: Path = DIST,
    ) -> None:
        super().__init__(scope, construct_id)
        self._assets = assets
        self._connect_src: list[str] = []

        self.bucket = s3.Bucket(
            self,
            "Site",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=access_logs,
            server_access_logs_prefix="dashboard/",
            removal_policy=RemovalPolicy.RETAIN,
        )

        # The CSP's connect-src names the APIs, known only once `publish` is called: a lazy value.
        csp = Lazy.string(_Deferred(lambda: self.content_security_policy))
        self.headers = cloudfront.ResponseHeadersPolicy(
            self,
            "SecurityHeaders",
            comment="Stepwise dashboard: CSP, HSTS, nosniff, no framing, no referrer",
            security_headers_behavior=cloudfront.ResponseSecurityHeadersBehavior(
                content_security_policy=cloudfront.ResponseHeadersContentSecurityPolicy(
                    content_security_policy=csp, override=True
                ),
                strict_transport_security=cloudfront.ResponseHeadersStrictTransportSecurity(
                    access_control_max_age=Duration.days(365), include_subdomains=True, override=True
                ),
                content_type_options=cloudfront.ResponseHeadersContentTypeOptions(override=True),
                frame_options=cloudfront.ResponseHeadersFrameOptions(
                    frame_option=cloudfront.HeadersFrameOption.DENY, override=True
                ),
                referrer_policy=cloudfront.ResponseHeadersReferrerPolicy(
                    referrer_policy=cloudfront.HeadersReferrerPolicy.NO_REFERRER, override=True
                ),
            ),
        )

        self.distribution = cloudfront.Distribution(
            self,
            "Cdn",
            comment="Stepwise dashboard",
            default_root_object="index.html",
            default_behavior=cloudfront.BehaviorOptions(
                origin=origins.S3BucketOrigin.with_origin_access_control(self.bucket),
                viewer_protocol_policy=cloudfront.ViewerProtocolPolicy.REDIRECT_TO_HTTPS,
                cache_policy=cloudfront.CachePolicy.CACHING_OPTIMIZED,
                response_headers_policy=self.headers,
                compress=True,
            ),
            http_version=cloudfront.HttpVersion.HTTP2_AND_3,
            price_class=cloudfront.PriceClass.PRICE_CLASS_100,
        )
        for rule, reason in (
            (
                "AwsSolutions-CFR1",
                "No geo restriction: the dashboard is a static app for the stack's own users, "
                "who sign in through Cognito; where they are is not a control this stack can choose.",
            ),
            (
                "AwsSolutions-CFR2",
                "No WAF web ACL by default (fixed monthly cost): the distribution serves only static "
                "files; every data call goes to the API, which needs a Cognito token and is throttled.",
            ),
            (
                "AwsSolutions-CFR3",
                "No CloudFront access logs: the distribution serves the same public static files to "
                "everyone; requests that touch data are logged by the API's access log.",
            ),
            (
                "AwsSolutions-CFR4",
                "The default *.cloudfront.net certificate cannot pin a TLS floor (CloudFront ignores a "
                "minimum protocol version without a custom certificate); attach a domain to set one.",
            ),
        ):
            acknowledge(self.distribution, rule, reason)

    @property
    def origin(self) -> str:
        """`https://<distribution>.cloudfront.net`: the origin the API must allow (CORS)."""
        return f"https://{self.distribution.distribution_domain_name}"

    @property
    def url(self) -> str:
        return f"{self.origin}/"

    @property
    def content_security_policy(self) -> str:
        connect = " ".join(["'self'", *self._connect_src])
        return (
            "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
            f"font-src 'self'; connect-src {connect}; object-src 'none'; base-uri 'self'; "
            "form-action 'self'; frame-ancestors 'none'"
        )

    def publish(
        self,
        *,
        api_url: str,
        api_host: str,
        websocket_url: str | None,
        user_pool: cognito.UserPool,
        user_pool_client: cognito.UserPoolClient,
        hosted_ui: cognito.UserPoolDomain | None = None,
    ) -> None:
        """Configure sign-in and the CSP for these APIs, and deploy the app with its config.json.
        `hosted_ui`: the pool's sign-in domain when the stack has one (a pool has at most one).
        `api_host`: the REST API's host, named by the API's id rather than its stage URL: the API's
        CORS answers name this distribution, so the CSP must not depend on the API's deployment
        (that would be a dependency cycle)."""
        stack = Stack.of(self)
        self.hosted_ui = hosted_ui or user_pool.add_domain(
            "HostedUi", cognito_domain=cognito.CognitoDomainOptions(domain_prefix=domain_prefix(stack.stack_name))
        )
        hosted_ui = f"https://{self.hosted_ui.domain_name}.auth.{Aws.REGION}.amazoncognito.com"
        self._enable_code_flow(user_pool_client)

        self._connect_src = [
            f"https://{api_host}",
            f"https://cognito-idp.{Aws.REGION}.amazonaws.com",
            hosted_ui,
        ]
        if websocket_url:
            self._connect_src.append(f"wss://{_host(websocket_url)}")

        config = {
            "apiUrl": api_url,
            "wsUrl": websocket_url or "",  # "": no WebSocket, the app polls the event log
            "auth": {
                "kind": "cognito",
                "authority": f"https://cognito-idp.{Aws.REGION}.amazonaws.com/{user_pool.user_pool_id}",
                "clientId": user_pool_client.user_pool_client_id,
                "domain": hosted_ui,
                "scope": " ".join(s.scope_name for s in OAUTH_SCOPES),
            },
        }
        if (self._assets / "index.html").is_file():
            app = s3deploy.Source.asset(str(self._assets), exclude=list(ENTRY_FILES))
            entry = s3deploy.Source.asset(str(self._assets), exclude=["*", *(f"!{f}" for f in ENTRY_FILES[:1])])
        else:
            Annotations.of(self).add_warning_v2(
                "stepwise:dashboard-not-built", f"{self._assets} has no index.html: deploying a placeholder page"
            )
            app = s3deploy.Source.data("favicon.svg", "")
            entry = s3deploy.Source.data("index.html", PLACEHOLDER)
        # The copy function's log group goes with the stack (a kept named group would block a redeploy).
        deploy_logs = logs.LogGroup(
            self, "DeployLogs", retention=logs.RetentionDays.ONE_MONTH, removal_policy=RemovalPolicy.DESTROY
        )
        # Hashed assets are cached for a year; the entry files never, so a deploy shows at once.
        self.assets_deployment = s3deploy.BucketDeployment(
            self,
            "Assets",
            destination_bucket=self.bucket,
            sources=[app],
            prune=False,
            log_group=deploy_logs,
            cache_control=[s3deploy.CacheControl.from_string("public, max-age=31536000, immutable")],
        )
        self.entry_deployment = s3deploy.BucketDeployment(
            self,
            "Entry",
            destination_bucket=self.bucket,
            sources=[entry, s3deploy.Source.json_data("config.json", config)],
            prune=False,
            log_group=deploy_logs,
            cache_control=[s3deploy.CacheControl.from_string("no-cache")],
            distribution=self.distribution,
            distribution_paths=["/index.html", "/config.json", "/"],
        )
        self.entry_deployment.node.add_dependency(self.assets_deployment)
        self.config = config
        self._acknowledge_deployment_handler(stack)

    def _acknowledge_deployment_handler(self, stack: Stack) -> None:
        """BucketDeployment's copy function is one per stack, made by aws-cdk-lib at the stack's root."""
        handler = next(c for c in stack.node.children if c.node.id.startswith("Custom::CDKBucketDeployment"))
        why_s3 = (
            "aws-cdk-lib's BucketDeployment copies the built dashboard from the CDK asset bucket to the "
            "dashboard bucket; its generated policy is scoped to those two buckets."
        )
        for rule, reason in (
            ("AwsSolutions-IAM5[Action::s3:GetBucket*]", why_s3),
            ("AwsSolutions-IAM5[Action::s3:GetObject*]", why_s3),
            ("AwsSolutions-IAM5[Action::s3:List*]", why_s3),
            ("AwsSolutions-IAM5[Action::s3:Abort*]", why_s3),
            ("AwsSolutions-IAM5[Action::s3:DeleteObject*]", why_s3),
            (
                f"AwsSolutions-IAM5[Resource::{_asset_objects(stack)}]",
                "The CDK bootstrap asset bucket holds the dashboard's zipped build under a content hash "
                "known only at deploy; the copy function reads objects of that bucket only.",
            ),
            (
                f"AwsSolutions-IAM5[Resource::<{stack.resolve(self.bucket.node.default_child.logical_id)}.Arn>/*]",  # type: ignore[union-attr]
                "The copy function writes the dashboard's files, any key, into the dashboard bucket, and nothing else.",
            ),
            (
                "AwsSolutions-IAM5[Resource::*]",
                "CloudFront invalidations (CreateInvalidation/GetInvalidation) after a deploy: these "
                "actions accept no resource-level restriction narrower than the account.",
            ),
            (
                "AwsSolutions-IAM4[Policy::arn:<AWS::Partition>:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole]",
                "The BucketDeployment copy function (made by aws-cdk-lib) logs through the AWS basic "
                "execution policy; it runs only during deployments.",
            ),
            (
                "AwsSolutions-L1",
                "The BucketDeployment copy function's runtime is chosen by aws-cdk-lib (pinned in "
                "pyproject.toml) and follows its releases; it runs only during deployments.",
            ),
        ):
            acknowledge(handler, rule, reason)

    def _enable_code_flow(self, client: cognito.UserPoolClient) -> None:
        """The app client signs in through the hosted UI: authorization code (+ PKCE), back to here."""
        cfn = client.node.default_child
        assert isinstance(cfn, cognito.CfnUserPoolClient)
        cfn.allowed_o_auth_flows_user_pool_client = True
        cfn.allowed_o_auth_flows = ["code"]
        cfn.allowed_o_auth_scopes = [s.scope_name for s in OAUTH_SCOPES]
        # The dashboard is added to whatever callbacks the stack configured for other frontends.
        cfn.callback_ur_ls = [*(cfn.callback_ur_ls or []), self.url]
        cfn.logout_ur_ls = [*(cfn.logout_ur_ls or []), self.url]
        cfn.supported_identity_providers = ["COGNITO"]
