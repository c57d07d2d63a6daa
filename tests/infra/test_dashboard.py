"""The web dashboard on AWS: private bucket behind CloudFront (origin access control), security
headers with a CSP naming only this stack's endpoints, config.json written at deploy, hosted-UI
sign-in with the authorization code flow."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from tests.infra.conftest import Synthesized
from tests.infra.test_stack import refs

pytestmark = pytest.mark.infra
pytest.importorskip("aws_cdk", reason="infra tests need the [infra] extra (aws-cdk-lib, cdk-nag)")


def _template(synth: Synthesized) -> Any:
    from aws_cdk.assertions import Template

    return Template.from_json(synth.template)


def _flat(value: Any) -> str:
    """A template value as text (Fn::Join parts joined, references as {Ref}), for reading CSPs."""
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and "Fn::Join" in value:
        sep, parts = value["Fn::Join"]
        return sep.join(_flat(p) for p in parts)
    return json.dumps(value, sort_keys=True)


def test_bucket_is_private_encrypted_tls_only_and_logged(synth: Synthesized) -> None:
    dash = synth.stack.dashboard
    bucket_id = synth.logical_id(dash.bucket)
    props = synth.resources[bucket_id]["Properties"]
    assert props["PublicAccessBlockConfiguration"] == {
        "BlockPublicAcls": True,
        "BlockPublicPolicy": True,
        "IgnorePublicAcls": True,
        "RestrictPublicBuckets": True,
    }
    assert props["BucketEncryption"]["ServerSideEncryptionConfiguration"][0]["ServerSideEncryptionByDefault"] == {
        "SSEAlgorithm": "AES256"
    }
    assert props["LoggingConfiguration"]["LogFilePrefix"] == "dashboard/"
    assert refs(props["LoggingConfiguration"]) == {synth.logical_id(synth.stack.storage.access_logs)}
    (policy,) = [
        p["Properties"]
        for p in synth.of_type("AWS::S3::BucketPolicy").values()
        if bucket_id in refs(p["Properties"]["Bucket"])
    ]
    statements = policy["PolicyDocument"]["Statement"]
    assert any(
        s["Effect"] == "Deny" and s.get("Condition") == {"Bool": {"aws:SecureTransport": "false"}} for s in statements
    )
    # Only CloudFront, and only this distribution, may read it (origin access control).
    (read,) = [s for s in statements if s["Effect"] == "Allow"]
    assert read["Principal"] == {"Service": "cloudfront.amazonaws.com"}
    assert read["Action"] == "s3:GetObject"
    assert synth.logical_id(dash.distribution) in refs(read["Condition"])


def test_distribution_serves_https_through_origin_access_control(synth: Synthesized) -> None:
    dash = synth.stack.dashboard
    config = synth.resources[synth.logical_id(dash.distribution)]["Properties"]["DistributionConfig"]
    assert config["DefaultRootObject"] == "index.html"
    assert config["HttpVersion"] == "http2and3"
    (origin,) = config["Origins"]
    assert "OriginAccessControlId" in origin and origin["S3OriginConfig"] == {"OriginAccessIdentity": ""}
    behaviour = config["DefaultCacheBehavior"]
    assert behaviour["ViewerProtocolPolicy"] == "redirect-to-https"
    assert behaviour["Compress"] is True
    assert refs(behaviour["ResponseHeadersPolicyId"]) == {synth.logical_id(dash.headers)}
    _template(synth).has_resource_properties(
        "AWS::CloudFront::OriginAccessControl",
        {"OriginAccessControlConfig": {"OriginAccessControlOriginType": "s3", "SigningBehavior": "always"}},
    )
    assert not synth.of_type("AWS::CloudFront::CloudFrontOriginAccessIdentity")


def test_security_headers_and_a_csp_naming_only_this_stacks_endpoints(synth: Synthesized) -> None:
    dash = synth.stack.dashboard
    headers = synth.resources[synth.logical_id(dash.headers)]["Properties"]["ResponseHeadersPolicyConfig"]
    security = headers["SecurityHeadersConfig"]
    assert security["StrictTransportSecurity"]["AccessControlMaxAgeSec"] >= 365 * 24 * 3600
    assert security["FrameOptions"]["FrameOption"] == "DENY"
    assert security["ReferrerPolicy"]["ReferrerPolicy"] == "no-referrer"
    assert security["ContentTypeOptions"]["Override"] is True
    csp_value = security["ContentSecurityPolicy"]["ContentSecurityPolicy"]
    csp = _flat(csp_value)
    directives = dict(d.strip().split(" ", 1) for d in csp.split(";") if d.strip())
    assert directives["default-src"] == "'self'"
    assert directives["script-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["object-src"] == "'none'"
    assert "unsafe" not in csp and "*" not in csp
    connect = directives["connect-src"]
    assert connect.startswith("'self' https://")
    assert synth.logical_id(synth.stack.api.rest_api) in refs(csp_value)  # the REST API's host
    assert synth.logical_id(dash.hosted_ui) in refs(csp_value)  # the hosted UI (token exchange)
    assert "wss://" in connect and synth.logical_id(synth.stack.websocket.api) in refs(csp_value)
    assert re.search(r"https://cognito-idp\.\{.*\}\.amazonaws\.com", connect)


def test_config_json_is_written_at_deploy_with_the_api_and_cognito_ids(synth: Synthesized) -> None:
    dash = synth.stack.dashboard
    entry = synth.resources[synth.logical_id(dash.entry_deployment.node.find_child("CustomResource"))]["Properties"]
    markers = next(m for m in entry["SourceMarkers"] if m)
    values = {json.dumps(v, sort_keys=True) for v in markers.values()}
    api = synth.logical_id(synth.stack.api.rest_api)
    assert any(api in refs(json.loads(v)) for v in values), "apiUrl"
    assert any(synth.logical_id(synth.stack.api.user_pool) in refs(json.loads(v)) for v in values), "authority"
    assert any(synth.logical_id(synth.stack.api.client) in refs(json.loads(v)) for v in values), "clientId"
    assert any(synth.logical_id(synth.stack.websocket.api) in refs(json.loads(v)) for v in values), "wsUrl"
    # The config file itself, as packaged: every deploy-time value is a marker the deployment fills.
    (config_file,) = [p for p in synth.outdir.glob("asset.*/config.json")]
    text = config_file.read_text()
    assert re.fullmatch(
        r'\{"apiUrl":<<marker:\S+>>,"wsUrl":<<marker:\S+>>,"auth":\{"kind":"cognito","authority":<<marker:\S+>>,'
        r'"clientId":<<marker:\S+>>,"domain":<<marker:\S+>>,"scope":"openid email profile"\}\}',
        text,
    ), text
    # Entry files are never cached, hashed assets for a year; a deploy invalidates the entry.
    assert entry["SystemMetadata"] == {"cache-control": "no-cache"}
    assert sorted(entry["DistributionPaths"]) == ["/", "/config.json", "/index.html"]
    assets = synth.resources[synth.logical_id(dash.assets_deployment.node.find_child("CustomResource"))]
    assert assets["Properties"]["SystemMetadata"] == {"cache-control": "public, max-age=31536000, immutable"}
    assert entry["Prune"] is False and assets["Properties"]["Prune"] is False


def test_sign_in_is_the_hosted_ui_with_the_authorization_code_flow(synth: Synthesized) -> None:
    dash = synth.stack.dashboard
    client = synth.resources[synth.logical_id(synth.stack.api.client)]["Properties"]
    assert client["AllowedOAuthFlows"] == ["code"]  # no implicit flow; PKCE on a public client
    assert client["AllowedOAuthFlowsUserPoolClient"] is True
    assert client["GenerateSecret"] is False
    assert sorted(client["AllowedOAuthScopes"]) == ["email", "openid", "profile"]
    assert client["SupportedIdentityProviders"] == ["COGNITO"]
    distribution = synth.logical_id(dash.distribution)
    for key in ("CallbackURLs", "LogoutURLs"):
        url = client[key][-1]
        assert _flat(url).startswith("https://") and refs(url) == {distribution}
    domain = synth.resources[synth.logical_id(dash.hosted_ui)]["Properties"]
    assert refs(domain["UserPoolId"]) == {synth.logical_id(synth.stack.api.user_pool)}
    assert re.fullmatch(r"[a-z0-9-]+(-\{.*AccountId.*\})?", _flat(domain["Domain"]))


def test_dashboard_url_is_an_output(synth: Synthesized) -> None:
    output = synth.template["Outputs"]["DashboardUrl"]
    assert refs(output["Value"]) == {synth.logical_id(synth.stack.dashboard.distribution)}


def test_the_deploy_time_copy_function_reaches_only_the_asset_and_dashboard_buckets(synth: Synthesized) -> None:
    dash_bucket = synth.logical_id(synth.stack.dashboard.bucket)
    (policy,) = [
        p["Properties"]["PolicyDocument"]
        for k, p in synth.of_type("AWS::IAM::Policy").items()
        if k.startswith("CustomCDKBucketDeployment")
    ]
    for st in policy["Statement"]:
        actions = st["Action"] if isinstance(st["Action"], list) else [st["Action"]]
        resources = st["Resource"] if isinstance(st["Resource"], list) else [st["Resource"]]
        if all(a.startswith("cloudfront:") for a in actions):
            assert set(actions) == {"cloudfront:CreateInvalidation", "cloudfront:GetInvalidation"}
            continue
        writes = any(not a.startswith(("s3:Get", "s3:List")) for a in actions)
        for r in resources:
            if writes:
                assert refs(r) == {dash_bucket}, (actions, r)
            else:
                assert "cdk-hnb659fds-assets" in json.dumps(r) or refs(r) == {dash_bucket}, (actions, r)
