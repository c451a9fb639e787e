"""A run's records read back from the records bucket, and its report page written beside them."""

from __future__ import annotations

import json
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from relayguard.adapters.s3_records import PREFIX
from relayguard.domain.evidence import key_part
from relayguard.errors import RecordError

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any

#: Report pages go below this prefix: ``reports/<run_id>.html``. The worker may put here and nowhere else
#: but records/, so a report can never overwrite a record.
REPORTS_PREFIX = "reports/"
#: Records fetched at once: a run's last job reads every record of the run before its digest goes out
#: (boto3 clients are thread-safe; 16 GETs in flight keep 10,000 records to seconds, not minutes).
FETCH_CONCURRENCY = 16


class S3RunReports:
    def __init__(self, client: S3Client, bucket: str, *, prefix: str = PREFIX, reports_prefix: str = REPORTS_PREFIX,
                 concurrency: int = FETCH_CONCURRENCY) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.reports_prefix = reports_prefix
        self.concurrency = concurrency

    def _keys(self, run_id: str) -> Iterator[str]:
        # Page by page (1,000 keys each): a plain loop rather than a paginator, so that harness/iam.py reads
        # the call as the ListBucket it is.
        token: dict[str, str] = {}
        while True:
            page = self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}{key_part(run_id)}/",
                                               **token)  # type: ignore[arg-type]
            for item in page.get("Contents", []):
                if item["Key"].endswith(".json"):
                    yield item["Key"]
            if not page.get("IsTruncated"):
                return
            token = {"ContinuationToken": page["NextContinuationToken"]}

    def _get(self, key: str) -> tuple[str, dict[str, Any]]:
        location = f"s3://{self.bucket}/{key}"
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except ClientError as exc:
            raise RecordError(f"{location}: {exc.response.get('Error', {}).get('Code', 'error')}") from exc
        try:
            document: dict[str, Any] = json.loads(body)
        except ValueError as exc:
            raise RecordError(f"{location}: not JSON") from exc
        return location, document

    def records(self, run_id: str | None) -> Iterator[tuple[str, dict[str, Any]]]:
        if not run_id:
            raise RecordError(f"s3://{self.bucket}: a report of the bucket needs a run id")
        try:
            with ThreadPoolExecutor(max_workers=self.concurrency) as pool:
                # map keeps at most the listed keys in memory, and yields documents in key order.
                yield from pool.map(self._get, self._keys(run_id))
        except ClientError as exc:
            raise RecordError(f"s3://{self.bucket}/{self.prefix}: "
                              f"{exc.response.get('Error', {}).get('Code', 'error')}") from exc

    def write(self, run_id: str | None, html: str) -> str:
        key = f"{self.reports_prefix}{key_part(run_id or 'all')}.html"
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=html.encode(),
                                   ContentType="text/html; charset=utf-8")
        except ClientError as exc:
            raise RecordError(f"s3://{self.bucket}/{key}: {exc.response.get('Error', {}).get('Code', 'error')}") \
                from exc
        return f"s3://{self.bucket}/{key}"
