"""How to reach an S3 API: endpoint, region and credentials, shared by every S3 plugin.

Credentials come from the standard AWS chain (environment variables, a profile in
``~/.aws``, a container or instance role) unless a spec names them; ``endpoint_url``
points at an S3-compatible store (MinIO, Ceph, moto). The same options are turned
into keyword arguments for ``s3fs`` (the source), a ``boto3`` client (sink, state
store, DLQ) and ``deltalake`` storage options (the Delta sink), so a spec states them
once in the form its user knows.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator

from sluiceway.core.errors import ConfigError
from sluiceway.plugins import StageConfig, require

__all__ = ["S3Connection", "S3Location", "S3Options", "is_s3_uri", "split_uri"]

_SCHEMES = ("s3://", "s3a://")


def is_s3_uri(uri: str) -> bool:
    """True for ``s3://`` and ``s3a://`` URIs."""
    return uri.lower().startswith(_SCHEMES)


@dataclass(frozen=True, slots=True)
class S3Location:
    """A bucket and a key prefix (without leading or trailing slash)."""

    bucket: str
    prefix: str

    def key(self, *parts: str) -> str:
        """The key of ``parts`` under the prefix."""
        return "/".join(p.strip("/") for p in (self.prefix, *parts) if p.strip("/"))

    def uri(self, *parts: str) -> str:
        return f"s3://{self.bucket}/{self.key(*parts)}"


def split_uri(uri: str) -> S3Location:
    """``s3://bucket/some/prefix/`` → ``S3Location("bucket", "some/prefix")``."""
    if not is_s3_uri(uri):
        raise ConfigError(f"not an s3:// URI: {uri!r}")
    rest = uri.split("://", 1)[1]
    bucket, _, prefix = rest.partition("/")
    if not bucket:
        raise ConfigError(f"{uri!r} names no bucket")
    return S3Location(bucket, prefix.strip("/"))


@dataclass(frozen=True, slots=True)
class S3Options:
    """Connection settings as plain values (secrets revealed only when a client is built)."""

    endpoint_url: str | None = None
    region: str | None = None
    profile: str | None = None
    access_key_id: str | None = None
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    anonymous: bool = False
    max_attempts: int = 5
    connect_timeout: float = 10.0
    read_timeout: float = 60.0

    def __repr__(self) -> str:
        return (
            f"S3Options(endpoint_url={self.endpoint_url!r}, region={self.region!r}, "
            f"profile={self.profile!r}, credentials={'given' if self.access_key_id else 'chain'})"
        )

    # -- s3fs -------------------------------------------------------------------------

    def s3fs_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``s3fs.S3FileSystem`` (a fresh instance: listings not cached)."""
        kwargs: dict[str, Any] = {
            "skip_instance_cache": True,
            "use_listings_cache": False,
            "config_kwargs": {
                "retries": {"max_attempts": self.max_attempts, "mode": "standard"},
                "connect_timeout": self.connect_timeout,
                "read_timeout": self.read_timeout,
            },
        }
        if self.endpoint_url:
            kwargs["endpoint_url"] = self.endpoint_url
        if self.region:
            kwargs["client_kwargs"] = {"region_name": self.region}
        if self.profile:
            kwargs["profile"] = self.profile
        if self.anonymous:
            kwargs["anon"] = True
        if self.access_key_id:
            kwargs["key"] = self.access_key_id
            kwargs["secret"] = _reveal(self.secret_access_key)
            if self.session_token is not None:
                kwargs["token"] = _reveal(self.session_token)
        return kwargs

    def filesystem(self, what: str) -> Any:
        """An ``s3fs.S3FileSystem`` for these options."""
        s3fs = require("s3fs", extra="s3", what=what)
        return s3fs.S3FileSystem(**self.s3fs_kwargs())

    def arrow_filesystem(self, bucket: str | None = None) -> Any:
        """pyarrow's C++ S3 client for these options, or None when it cannot honour them.

        It reads objects without holding the GIL and with fewer round trips than
        ``s3fs``. A named ``profile`` is not something it can be given, so then the
        caller keeps to ``s3fs``.
        """
        if self.profile:
            return None
        import pyarrow.fs as pafs

        kwargs: dict[str, Any] = {
            "retry_strategy": pafs.AwsStandardS3RetryStrategy(max_attempts=self.max_attempts),
            "connect_timeout": self.connect_timeout,
            "request_timeout": self.read_timeout,
            "anonymous": self.anonymous,
        }
        if self.endpoint_url:
            parts = urlsplit(self.endpoint_url)
            kwargs["endpoint_override"] = parts.netloc + parts.path.rstrip("/")
            kwargs["scheme"] = parts.scheme
        region = self.region
        if region is None and self.endpoint_url is None and bucket:
            try:
                region = pafs.resolve_s3_region(bucket)
            except OSError:
                region = None
        if region:
            kwargs["region"] = region
        if self.access_key_id:
            kwargs["access_key"] = self.access_key_id
            kwargs["secret_key"] = _reveal(self.secret_access_key)
            kwargs["session_token"] = _reveal(self.session_token)
        return pafs.S3FileSystem(**kwargs)

    # -- boto3 ------------------------------------------------------------------------

    def client(self, what: str) -> Any:
        """A ``boto3`` S3 client for these options, shared by every caller in the process.

        Building one loads botocore's service model (a noticeable fraction of a
        second); clients are thread-safe, so the sink, the state store and the DLQ of
        a run share one. Callers must not close it.
        """
        with _clients_lock:
            client = _clients.get(self)
            if client is None:
                client = _clients[self] = self._new_client(what)
            return client

    def _new_client(self, what: str) -> Any:
        boto3 = require("boto3", extra="s3", what=what)
        botocore = require("botocore", extra="s3", what=what)
        config_module = require("botocore.config", extra="s3", what=what)
        UNSIGNED, Config = botocore.UNSIGNED, config_module.Config

        session = boto3.session.Session(
            profile_name=self.profile,
            aws_access_key_id=self.access_key_id,
            aws_secret_access_key=_reveal(self.secret_access_key),
            aws_session_token=_reveal(self.session_token),
            region_name=self.region,
        )
        config = Config(
            retries={"max_attempts": self.max_attempts, "mode": "standard"},
            connect_timeout=self.connect_timeout,
            read_timeout=self.read_timeout,
            signature_version=UNSIGNED if self.anonymous else None,
        )
        return session.client("s3", endpoint_url=self.endpoint_url, config=config)

    # -- deltalake --------------------------------------------------------------------

    def delta_storage_options(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """``storage_options`` of ``deltalake`` for an ``s3://`` table.

        Commits use S3 conditional writes (``If-None-Match: *`` on the log entry):
        ``conditional_put: etag`` is set explicitly so that concurrent writers are
        safe without DynamoDB and without ``AWS_S3_ALLOW_UNSAFE_RENAME``.
        """
        options: dict[str, str] = {
            "conditional_put": "etag",
            "max_retries": str(self.max_attempts - 1),
        }
        if self.endpoint_url:
            options["AWS_ENDPOINT_URL"] = self.endpoint_url
            if urlsplit(self.endpoint_url).scheme == "http":
                options["AWS_ALLOW_HTTP"] = "true"
        if self.region:
            options["AWS_REGION"] = self.region
        if self.profile:
            options["AWS_PROFILE"] = self.profile
        if self.anonymous:
            options["AWS_SKIP_SIGNATURE"] = "true"
        if self.access_key_id:
            options["AWS_ACCESS_KEY_ID"] = self.access_key_id
            options["AWS_SECRET_ACCESS_KEY"] = _reveal(self.secret_access_key) or ""
            if self.session_token is not None:
                options["AWS_SESSION_TOKEN"] = _reveal(self.session_token) or ""
        options.update(extra or {})
        return options


_clients_lock = threading.Lock()
_clients: dict[S3Options, Any] = {}


def _reveal(secret: SecretStr | None) -> str | None:
    return secret.get_secret_value() if secret is not None else None


class S3Connection(StageConfig):
    """The connection keys every S3-backed plugin accepts, next to its own.

    All are optional: without them the AWS SDKs find credentials and region the
    standard way (``AWS_*`` variables, ``~/.aws`` profiles, container or instance roles).
    """

    endpoint_url: str | None = Field(
        None, description="S3-compatible endpoint, e.g. http://127.0.0.1:9000 (MinIO, moto)"
    )
    region: str | None = Field(None, description="AWS region; default from the AWS chain")
    profile: str | None = Field(None, description="named profile of ~/.aws/config")
    access_key_id: str | None = Field(
        None, description="prefer the AWS chain; set with ${AWS_ACCESS_KEY_ID} if you must"
    )
    secret_access_key: SecretStr | None = None
    session_token: SecretStr | None = None
    anonymous: bool = Field(False, description="unsigned requests (public buckets)")
    max_attempts: int = Field(5, ge=1, description="tries per S3 request (SDK retries)")

    @field_validator("endpoint_url")
    @classmethod
    def _endpoint(cls, value: str | None) -> str | None:
        if value is not None and urlsplit(value).scheme not in ("http", "https"):
            raise ValueError(f"endpoint_url must be an http(s) URL, got {value!r}")
        return value

    def s3_options(self) -> S3Options:
        if self.access_key_id and self.secret_access_key is None:
            raise ConfigError("access_key_id needs secret_access_key")
        return S3Options(
            endpoint_url=self.endpoint_url,
            region=self.region,
            profile=self.profile,
            access_key_id=self.access_key_id,
            secret_access_key=self.secret_access_key,
            session_token=self.session_token,
            anonymous=self.anonymous,
            max_attempts=self.max_attempts,
        )
