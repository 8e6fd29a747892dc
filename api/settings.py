"""Settings, read once from the environment (LASTMETER_*)."""

import re
from functools import lru_cache
from pathlib import Path
from urllib.parse import unquote, urlsplit

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from domain.errors import InvalidInput
from domain.storage.application import SNAPSHOT_INTERVAL
from domain.subsidy import DEFAULT_TIERS, SubsidyTiers


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LASTMETER_")

    database_url: str = "sqlite:///lastmeter.db"
    """`sqlite:///path/to/file.db` (the default) or `postgresql://user:pass@host:port/db`."""
    postgres_pool_size: int = Field(default=10, ge=2)
    """Connections per pool on PostgreSQL; at least 2, since startup holds one while it sets up the rest."""
    postgres_schema: str = ""
    """A PostgreSQL schema for lastmeter's tables (default: public), made on first start if it is not there."""
    master_key: str = ""
    """The master key (32 bytes, base64) that wraps every person's key; else read from master_key_file."""
    master_key_file: str = ""
    """Where the master key is kept (made on first start): default beside the SQLite file, or ./lastmeter.key."""
    aggregate_cache_size: int = Field(default=10_000, ge=0)
    """Aggregates kept in memory per process (0: none); each read still fetches any newer events
    (fast-forward). Not unbounded: an erasure drops what the cache holds of the person by its order."""
    case_snapshot_interval: int = Field(default=100, ge=0)
    """A case (and a lot of registrations) is snapshotted every this many events (0: never), so a long case
    reads without a full replay."""
    run_projector: bool = True
    """Whether `serve` keeps the views up to date itself (else run `lastmeter projector`)."""
    projector_process: bool = True
    """On PostgreSQL, run that projector in a process of its own (else a thread; always on SQLite)."""
    subsidy_tiers: str = DEFAULT_TIERS
    """Liaison subsidy tiers, "least work:yuan" pairs."""
    token_recheck_seconds: float = Field(default=1.0, ge=0)
    """How long a server trusts a token it has checked before asking the store again: a token revoked
    from another process is refused within this time (0: the store is asked on every request)."""
    min_position_wait: float = 5.0
    """Seconds a read with min_position waits for the views before answering 503."""
    ready_max_lag: int = 10_000
    """/readyz fails while a view is more than this many events behind."""

    @field_validator("database_url")
    @classmethod
    def _known_store(cls, url: str) -> str:
        if not url.startswith(("sqlite:///", "postgresql://", "postgres://")):
            raise ValueError("must start with sqlite:/// or postgresql://")
        return url

    @field_validator("postgres_schema")
    @classmethod
    def _plain_schema(cls, name: str) -> str:
        # Named unquoted where PostgreSQL folds case (the search path): a plain lowercase name is the same everywhere.
        if name and not re.fullmatch(r"[a-z_][a-z0-9_]{0,62}", name):
            raise ValueError("must be a lowercase name of letters, digits and underscores, not starting with a "
                             "digit, at most 63 characters")
        return name

    @field_validator("subsidy_tiers")
    @classmethod
    def _valid_tiers(cls, text: str) -> str:
        try:
            SubsidyTiers.parse(text)
        except InvalidInput as error:
            raise ValueError(error.reason) from None
        return text

    @property
    def is_postgres(self) -> bool:
        return not self.database_url.startswith("sqlite:")

    @property
    def sqlite_path(self) -> str:
        return self.database_url.removeprefix("sqlite:///")

    def beside_store(self, suffix: str, on_postgres: str) -> Path:
        """A file kept with the store: beside a SQLite store, named after it; with PostgreSQL, `on_postgres`
        in the working directory."""
        return Path(on_postgres) if self.is_postgres else Path(self.sqlite_path).with_suffix(suffix)

    def eventsourcing_env(self) -> dict[str, str]:
        """The library's persistence settings, from our one database URL."""
        reads = {"AGGREGATE_CACHE_MAXSIZE": str(self.aggregate_cache_size)} if self.aggregate_cache_size else {}
        if self.case_snapshot_interval:
            reads |= {"IS_SNAPSHOTTING_ENABLED": "y", SNAPSHOT_INTERVAL: str(self.case_snapshot_interval)}
        if not self.is_postgres:
            return {
                **reads,
                "PERSISTENCE_MODULE": "eventsourcing.sqlite",
                "SQLITE_DBNAME": self.sqlite_path,
                "SQLITE_LOCK_TIMEOUT": "30",
            }
        url = urlsplit(self.database_url)
        return {
            **reads,
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": url.path.lstrip("/") or "postgres",
            "POSTGRES_HOST": url.hostname or "127.0.0.1",
            "POSTGRES_PORT": str(url.port or 5432),
            "POSTGRES_USER": unquote(url.username or "postgres"),
            "POSTGRES_PASSWORD": unquote(url.password or ""),
            "POSTGRES_POOL_SIZE": str(self.postgres_pool_size),
            "POSTGRES_MAX_OVERFLOW": str(self.postgres_pool_size),
            "POSTGRES_SCHEMA": self.postgres_schema,
            # Seconds a read waits for a pooled connection. The library makes ten attempts: while
            # PostgreSQL refuses connections a request waits about 52 s with this, five minutes with
            # its default of 30.
            "POSTGRES_CONNECT_TIMEOUT": str(STORE_WAIT),
        }


STORE_WAIT = 5


@lru_cache
def get_settings() -> Settings:
    return Settings()
