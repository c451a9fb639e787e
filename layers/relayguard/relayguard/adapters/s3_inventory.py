"""The inventory as an S3 object (JSON or YAML)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from botocore.exceptions import ClientError

from relayguard.domain.server import Inventory
from relayguard.errors import InventoryError
from relayguard.inventory import load_text

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
else:
    S3Client = Any


class S3InventoryStore:
    def __init__(self, client: S3Client, bucket: str, key: str, fallback: dict[str, Any] | None = None) -> None:
        self.client = client
        self.bucket = bucket
        self.key = key
        self.fallback = fallback or {}

    def load(self) -> Inventory:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=self.key)["Body"].read()
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "error")
            raise InventoryError(f"s3://{self.bucket}/{self.key}: {code}") from exc
        return load_text(body.decode("utf-8"), f"s3://{self.bucket}/{self.key}", self.fallback)
