"""Configuration read from the environment (tasks.settings)."""

import pytest

from tasks.settings import DEV_SECRET, Settings


def test_an_empty_variable_is_an_unset_one(monkeypatch):
    """What compose's `${RUNCAST_SECRET:-}` or an `.env` line with no value passes: the default,
    not an empty signing secret or a filter that stops the service from starting."""
    for name in ("RUNCAST_SECRET", "RUNCAST_EVENTS", "RUNCAST_API_KEYS", "RUNCAST_AGENTS",
                 "RUNCAST_WEBHOOK_SECRET", "RUNCAST_DEFAULT_TIMEOUT"):
        monkeypatch.setenv(name, "")
    settings = Settings()
    assert settings.secret == DEV_SECRET
    assert settings.events == "all"
    assert settings.key_list == [] or not settings.key_list
    assert settings.agents == "tasks.demo"
    assert settings.webhook_secret is None


def test_a_bad_value_is_still_refused(monkeypatch):
    monkeypatch.setenv("RUNCAST_EVENTS", "tokens")  # not a name: "token" is
    with pytest.raises(ValueError, match="unknown event filter name 'tokens'"):
        Settings()
