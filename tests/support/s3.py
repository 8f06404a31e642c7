"""A real S3-compatible server for tests: a one-node Ceph cluster with a RADOS Gateway on 127.0.0.1,
bootstrapped by ``scripts/services/ceph-rgw.sh`` (see ``../shared/notes`` / the script for why each
setting is there). Started once per test session; each test gets a fresh bucket."""

from __future__ import annotations

import os
import secrets
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = ["SCRIPT", "CephRgw"]

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "services" / "ceph-rgw.sh"


@dataclass
class CephRgw:
    directory: Path
    endpoint: str = ""
    access_key: str = ""
    secret_key: str = ""
    region: str = "us-east-1"

    def start(self) -> CephRgw:
        out = subprocess.run(
            [str(SCRIPT), "start", str(self.directory)], check=True, capture_output=True, text=True, timeout=600
        ).stdout
        values = dict(line.split("=", 1) for line in out.splitlines() if "=" in line)
        self.endpoint = values["CHUNKD_S3_ENDPOINT"]
        self.access_key = values["CHUNKD_S3_ACCESS_KEY"]
        self.secret_key = values["CHUNKD_S3_SECRET_KEY"]
        self.region = values["CHUNKD_S3_REGION"]
        return self

    def stop_command(self) -> list[str]:
        return [str(SCRIPT), "stop", str(self.directory)]

    def stop(self) -> None:
        subprocess.run(self.stop_command(), check=False, timeout=60)

    def stop_gateway(self) -> None:
        """Stop the S3 endpoint alone (refused connections, as an outage or a restart of it); the
        cluster keeps the objects for ``start_gateway``. Only on a gateway of a test's own: the
        session's is shared."""
        subprocess.run([str(SCRIPT), "stop-gateway", str(self.directory)], check=True, timeout=60)

    def start_gateway(self) -> None:
        """Start the stopped endpoint again on its port, and wait until it answers."""
        subprocess.run([str(SCRIPT), "start-gateway", str(self.directory)], check=True, timeout=120)

    def client(self) -> Any:
        from chunkd.backends.blobs.s3 import make_client

        return make_client(
            endpoint=self.endpoint,
            region=self.region,
            access_key=self.access_key,
            secret_key=self.secret_key,
            max_connections=16,
        )

    def new_bucket(self) -> str:
        name = f"t-{secrets.token_hex(8)}"
        self.client().create_bucket(Bucket=name)
        return name

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """Settings for a ``chunkd serve`` process storing on this gateway."""
        return {
            "CHUNKD_STORAGE": "s3",
            "CHUNKD_S3_ENDPOINT": self.endpoint,
            "CHUNKD_S3_BUCKET": bucket,
            "CHUNKD_S3_REGION": self.region,
            "CHUNKD_S3_ACCESS_KEY": self.access_key,
            "CHUNKD_S3_SECRET_KEY": self.secret_key,
            "CHUNKD_S3_PREFIX": prefix,
        }


def can_install() -> str | None:
    """None when the gateway can run here, else why not (only consulted outside CI)."""
    result = subprocess.run([str(SCRIPT), "install"], capture_output=True, text=True, check=False)
    if result.returncode != 0:
        return (result.stderr or result.stdout).strip() or "ceph packages cannot be installed"
    return None


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in {"1", "true", "yes"}
