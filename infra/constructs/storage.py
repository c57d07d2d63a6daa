"""DynamoDB tables and the S3 bucket for build files.

Encryption choice:
- Tables: the AWS-managed key (aws/dynamodb). Key use is audited in CloudTrail, but no key policy or
  per-role kms grants have to be kept in step with every function and the pipe, and there is no
  per-key monthly cost. A customer-managed key adds value only when an operator must be able to
  revoke access independently of IAM or share data cross-account; swap `TableEncryption.AWS_MANAGED`
  for `CUSTOMER_MANAGED` then (and grant the pipe role kms:Decrypt).
- Files bucket: SSE-S3, which is also what the file store asks for on every PutObject
  (`ServerSideEncryption="AES256"`): no KMS request per file written or read.
"""

from __future__ import annotations

from aws_cdk import Duration, RemovalPolicy
from aws_cdk import aws_dynamodb as dynamodb
from aws_cdk import aws_s3 as s3
from constructs import Construct

from shared.resources import TABLES, Key, TableSpec

FILES_PREFIX = "builds/"
INPUT_FILES = "input"  # builds/{buildId}/input/{path}: files sent with POST /builds
GENERATED_FILES = "files"  # builds/{buildId}/files/{path}: files the tasks wrote


class Storage(Construct):
    def __init__(
        self, scope: Construct, construct_id: str, *, record_ttl_days: int, deletion_protection: bool = False
    ) -> None:
        super().__init__(scope, construct_id)
        # Production tables refuse DeleteTable (even from CloudFormation) until an operator turns
        # the protection off; every table is also retained when the stack goes.
        # Retention (RECORD_TTL_DAYS): each build, task, event and cache entry carries its expiry in
        # TTL_ATTRIBUTE, and files expire by the bucket's lifecycle after the same number of days, so
        # a build never lists files that are gone. The event log is also the outbox: its stream (new
        # images) feeds the webhook queue. Keys, indexes, streams and TTLs: `shared.resources`.
        self._tables = {
            name: table(self, spec, deletion_protection=deletion_protection) for name, spec in TABLES.items()
        }
        self.builds = self._tables["builds"]
        self.tasks = self._tables["tasks"]
        self.events = self._tables["events"]
        self.cache = self._tables["cache"]
        self.idempotency = self._tables["idempotency"]

        self.access_logs = s3.Bucket(
            self,
            "AccessLogs",
            # S3 server access logging can only deliver to SSE-S3 buckets.
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            # Log delivery is granted by bucket policy (feature flag in infra/app.py), so ACLs stay off.
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            lifecycle_rules=[
                s3.LifecycleRule(expiration=Duration.days(90), abort_incomplete_multipart_upload_after=Duration.days(1))
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )

        self.files = s3.Bucket(
            self,
            "Files",
            encryption=s3.BucketEncryption.S3_MANAGED,
            enforce_ssl=True,
            block_public_access=s3.BlockPublicAccess.BLOCK_ALL,
            object_ownership=s3.ObjectOwnership.BUCKET_OWNER_ENFORCED,
            server_access_logs_bucket=self.access_logs,
            server_access_logs_prefix="files/",
            # Generated files are reproducible by re-running the build, so no versioning; they
            # expire with the build's records (RECORD_TTL_DAYS).
            lifecycle_rules=[
                s3.LifecycleRule(
                    id="expire-build-files",
                    prefix=FILES_PREFIX,
                    expiration=Duration.days(record_ttl_days),
                ),
                s3.LifecycleRule(id="abort-multipart", abort_incomplete_multipart_upload_after=Duration.days(1)),
            ],
            removal_policy=RemovalPolicy.RETAIN,
        )

    @property
    def tables(self) -> dict[str, dynamodb.Table]:
        return dict(self._tables)


def table(scope: Construct, spec: TableSpec, *, deletion_protection: bool = False) -> dynamodb.Table:
    """The DynamoDB table `spec` describes: on demand, AWS-managed encryption, point-in-time
    recovery; retained when the stack goes unless the spec is ephemeral (then never protected)."""
    made = dynamodb.Table(
        scope,
        spec.construct_id,
        partition_key=_attribute(spec.partition),
        sort_key=_attribute(spec.sort) if spec.sort else None,
        billing_mode=dynamodb.BillingMode.PAY_PER_REQUEST,
        point_in_time_recovery_specification=dynamodb.PointInTimeRecoverySpecification(
            point_in_time_recovery_enabled=True
        ),
        encryption=dynamodb.TableEncryption.AWS_MANAGED,
        time_to_live_attribute=spec.ttl,
        stream=dynamodb.StreamViewType(spec.stream) if spec.stream else None,
        deletion_protection=None if spec.ephemeral else deletion_protection,
        removal_policy=RemovalPolicy.DESTROY if spec.ephemeral else RemovalPolicy.RETAIN,
    )
    for index in spec.indexes:
        made.add_global_secondary_index(
            index_name=index.name,
            partition_key=_attribute(index.partition),
            sort_key=_attribute(index.sort) if index.sort else None,
            projection_type=dynamodb.ProjectionType(index.projection),
        )
    return made


def _attribute(key: Key) -> dynamodb.Attribute:
    kind = dynamodb.AttributeType.STRING if key.type == "S" else dynamodb.AttributeType.NUMBER
    return dynamodb.Attribute(name=key.name, type=kind)
