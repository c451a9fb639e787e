"""Job records in S3: one object per job, written once (``If-None-Match: *``) into a versioned bucket."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from relayguard.domain.evidence import record_key
from relayguard.errors import RecordError, RecordExists

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

#: Every record key starts with this; the worker's role may write and read below it and nowhere else.
PREFIX = "records/"


class S3RecordStore:
    """Conditional writes make a second put to a key fail instead of replacing the object; the bucket's
    versioning keeps every version besides, should anyone with wider rights overwrite one by hand."""

    def __init__(self, client: S3Client, bucket: str, prefix: str = PREFIX) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix

    def put(self, document: dict[str, Any]) -> str:
        key = self.prefix + record_key(document)
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=json.dumps(document).encode(),
                                   ContentType="application/json", IfNoneMatch="*")
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            if code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise RecordExists(f"s3://{self.bucket}/{key} exists already") from exc
            raise RecordError(f"s3://{self.bucket}/{key}: {code}") from exc
        return f"s3://{self.bucket}/{key}"

    def get(self, location: str) -> dict[str, Any]:
        bucket, _, key = location.removeprefix("s3://").partition("/")
        if bucket != self.bucket or not key.startswith(self.prefix):
            raise RecordError(f"{location}: not a record of s3://{self.bucket}/{self.prefix}")
        try:
            body = self.client.get_object(Bucket=bucket, Key=key)["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise RecordError(f"{location}: {code}") from exc
        document: dict[str, Any] = json.loads(body)
        return document
