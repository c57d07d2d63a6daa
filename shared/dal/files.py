"""Build files in S3, under `builds/{buildId}/files/{path}`."""

from __future__ import annotations

import hashlib

from shared.dal.aws import client
from shared.dal.vendor_errors import error_code
from shared.errors import NotFound
from shared.models.plan import FileInfo, safe_relative_path


class FileStore:
    def __init__(self, bucket: str) -> None:
        self.bucket = bucket

    @staticmethod
    def key(build_id: str, path: str, *, kind: str = "files") -> str:
        return f"builds/{build_id}/{kind}/{safe_relative_path(path)}"

    def put(self, build_id: str, path: str, content: str, task_id: str, *, kind: str = "files") -> FileInfo:
        body = content.encode()
        digest = hashlib.sha256(body).hexdigest()
        client("s3").put_object(
            Bucket=self.bucket,
            Key=self.key(build_id, path, kind=kind),
            Body=body,
            ContentType=_content_type(path),
            Metadata={"taskid": task_id, "sha256": digest},
            ServerSideEncryption="AES256",
        )
        return FileInfo(path=safe_relative_path(path), size=len(body), sha256=digest, taskId=task_id)

    def get(self, build_id: str, path: str, *, kind: str = "files") -> bytes:
        try:
            obj = client("s3").get_object(Bucket=self.bucket, Key=self.key(build_id, path, kind=kind))
        except Exception as exc:
            if error_code(exc) in ("NoSuchKey", "404", "NotFound"):
                raise NotFound(f"file {path} not found") from None
            raise
        return obj["Body"].read()  # type: ignore[no-any-return]

    def get_text(self, build_id: str, path: str, *, kind: str = "files") -> str:
        return self.get(build_id, path, kind=kind).decode("utf-8", errors="replace")


_TYPES = {
    ".html": "text/html",
    ".css": "text/css",
    ".json": "application/json",
    ".js": "text/javascript",
    ".ts": "text/plain",
    ".tsx": "text/plain",
    ".md": "text/markdown",
    ".svg": "image/svg+xml",
}


def _content_type(path: str) -> str:
    for ext, ctype in _TYPES.items():
        if path.endswith(ext):
            return ctype + "; charset=utf-8"
    return "text/plain; charset=utf-8"
