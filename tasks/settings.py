"""The one settings class, read at the edge (worker start, API start, CLI)."""

from __future__ import annotations

from pydantic import Field, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from streaming.constants import (
    DEFAULT_CANCEL_GRACE_S,
    DEFAULT_MAX_ATTEMPTS,
    DEFAULT_MAX_EVENTS,
    DEFAULT_MAX_INPUT_BYTES,
    DEFAULT_RUN_TTL_S,
    DEFAULT_TIMEOUT_S,
    DEFAULT_WEBHOOK_MAX_ATTEMPTS,
    WEBHOOK_TIMEOUT_S,
)
from streaming.filters import EventsFilter
from tasks.webhook_secret import decode_webhook_secret

MEMORY_URL = "memory://"
DEV_SECRET = "runcast-dev-secret-change-me"


class Settings(BaseSettings):
    # An empty variable is an unset one (compose's `${RUNCAST_SECRET:-}`, an `.env` line with no
    # value): the default applies, not an empty secret or an events filter with no name
    model_config = SettingsConfigDict(env_prefix="RUNCAST_", extra="ignore", env_ignore_empty=True,
                                      hide_input_in_errors=True)  # secrets stay out of logs

    redis_url: str = Field("redis://localhost:6379/0", validation_alias="REDIS_URL")
    broker_url: str | None = None
    agents: str = "tasks.demo"
    api_keys: str | None = None
    secret: str = DEV_SECRET  # RUNCAST_SECRET: signs stream tokens
    events: str = "all"
    run_ttl: int = Field(DEFAULT_RUN_TTL_S, gt=0)
    max_events: int = Field(DEFAULT_MAX_EVENTS, gt=0)
    max_input_bytes: int = Field(DEFAULT_MAX_INPUT_BYTES, gt=0)
    default_timeout: float = Field(DEFAULT_TIMEOUT_S, gt=0)
    cancel_grace: float = Field(DEFAULT_CANCEL_GRACE_S, ge=0)
    max_attempts: int = Field(DEFAULT_MAX_ATTEMPTS, ge=1)
    webhook_secret: str | None = Field(None, repr=False)  # whsec_<base64>; unset, no webhooks
    webhook_max_attempts: int = Field(DEFAULT_WEBHOOK_MAX_ATTEMPTS, ge=1)
    webhook_allow_private: bool = False
    webhook_backoff: float = Field(1.0, gt=0)  # scales the pauses between attempts (tests)
    webhook_timeout: float = Field(WEBHOOK_TIMEOUT_S, gt=0)  # seconds one attempt may take

    @field_validator("events")
    @classmethod
    def _known_filter(cls, value: str) -> str:
        EventsFilter(value)  # raises ValueError for an unknown name
        return value

    @field_validator("webhook_secret")
    @classmethod
    def _webhook_secret(cls, value: str | None) -> str | None:
        if value is not None and value.strip():
            decode_webhook_secret(value)  # raises ValueError saying what is wrong
            return value.strip()
        return None

    @model_validator(mode="after")
    def _safe_secret(self) -> Settings:
        if self.key_list and (self.secret == DEV_SECRET or len(self.secret) < 16):
            raise ValueError(
                "RUNCAST_API_KEYS is set but RUNCAST_SECRET is the development default or "
                "shorter than 16 characters: set RUNCAST_SECRET to a long random value"
            )
        return self

    @property
    def embedded(self) -> bool:
        return self.redis_url.startswith(MEMORY_URL)

    @property
    def webhook_key(self) -> bytes | None:
        """The key that signs webhooks, or None while webhooks are off."""
        return decode_webhook_secret(self.webhook_secret) if self.webhook_secret else None

    @property
    def broker(self) -> str:
        return self.broker_url or self.redis_url

    @property
    def key_list(self) -> list[str]:
        return [k.strip() for k in (self.api_keys or "").split(",") if k.strip()]

    @property
    def agent_modules(self) -> list[str]:
        return [m.strip() for m in self.agents.split(",") if m.strip()]
