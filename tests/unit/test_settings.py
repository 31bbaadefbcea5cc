"""`kimi_mcp.settings`: the option table, loading from the environment and flags (flag over env over
default), parsing and validation of every value (errors name the variable or flag, on one line),
and `Secret`, which never shows its value."""

from __future__ import annotations

import json

import pytest

from kimi_mcp.settings import OPTIONS, Secret, Settings, SettingsError

TOKEN = "sk-ace-UNIT-TEST-token-9f8e7d6c5b4a"


class TestSettings:
    def test_defaults_of_table_and_dataclass_agree(self) -> None:
        """The table's default strings parse to exactly the dataclass defaults."""
        assert Settings.load({}) == Settings()

    def test_every_option_is_a_field(self) -> None:
        fields = set(Settings.__dataclass_fields__)
        assert {o.field for o in OPTIONS} == fields
        assert len({o.env for o in OPTIONS}) == len(OPTIONS)
        assert len({o.flag for o in OPTIONS}) == len(OPTIONS)

    def test_env_beats_default_and_flag_beats_env(self) -> None:
        env = {"KIMI_REQUEST_TIMEOUT": "30", "KIMI_DEFAULT_MODEL": "kimi-k2-thinking"}
        assert Settings.load({}).request_timeout == 900.0
        assert Settings.load(env).request_timeout == 30.0
        loaded = Settings.load(env, {"request_timeout": "60", "default_model": None})
        assert loaded.request_timeout == 60.0
        assert loaded.default_model == "kimi-k2-thinking"  # flag None: the env still counts

    def test_values_are_parsed(self) -> None:
        s = Settings.load({
            "ACEDATACLOUD_API_BASE_URL": "http://127.0.0.1:9/ ",
            "KIMI_EXTRA_MODELS": " kimi-k3, kimi-k2.6 ,,kimi-k3",
            "LOG_LEVEL": "debug",
            "KIMI_TRANSPORT": "SSE",
            "KIMI_PORT": "0",
            "KIMI_ALLOW_UNAUTHENTICATED": "yes",
            "KIMI_MAX_RETRIES": "0",
        })
        assert s.base_url == "http://127.0.0.1:9"
        assert s.extra_models == ("kimi-k3", "kimi-k2.6")
        assert s.log_level == "DEBUG"
        assert s.transport == "sse"
        assert s.port == 0
        assert s.allow_unauthenticated is True
        assert s.max_retries == 0

    def test_empty_token_is_no_token(self) -> None:
        assert Settings.load({"ACEDATACLOUD_API_TOKEN": "   "}).api_token is None
        assert Settings.load({"ACEDATACLOUD_API_TOKEN": f" {TOKEN} "}).api_token == Secret(TOKEN)

    @pytest.mark.parametrize(("env", "value"), [
        ("KIMI_REQUEST_TIMEOUT", "abc"),
        ("KIMI_REQUEST_TIMEOUT", "0"),
        ("KIMI_REQUEST_TIMEOUT", "nan"),
        ("ACEDATACLOUD_API_BASE_URL", "ftp://x"),
        ("ACEDATACLOUD_API_BASE_URL", "api.acedata.cloud"),
        ("ACEDATACLOUD_API_BASE_URL", "http://"),
        ("LOG_LEVEL", "LOUD"),
        ("KIMI_TRANSPORT", "websocket"),
        ("KIMI_PORT", "http"),
        ("KIMI_PORT", "70000"),
        ("KIMI_PORT", "80.5"),
        ("KIMI_SOFT_DEADLINE", "-1"),
        ("KIMI_CONVERSATION_TTL_DAYS", "forever"),
        ("KIMI_MAX_TURNS", "1"),
        ("KIMI_MAX_CONVERSATION_BYTES", "10"),
        ("KIMI_MAX_RETRIES", "11"),
        ("KIMI_MAX_CONCURRENCY", "0"),
        ("KIMI_CONNECT_TIMEOUT", "0"),
        ("KIMI_FIRST_BYTE_TIMEOUT", "soon"),
        ("KIMI_IDLE_TIMEOUT", "-5"),
        ("KIMI_ALLOW_UNAUTHENTICATED", "maybe"),
        ("KIMI_MAX_REQUEST_BYTES", "1"),
    ])
    def test_malformed_env_names_the_variable(self, env: str, value: str) -> None:
        with pytest.raises(SettingsError) as info:
            Settings.load({env: value})
        message = str(info.value)
        assert env in message
        assert "\n" not in message

    def test_malformed_flag_names_the_flag(self) -> None:
        with pytest.raises(SettingsError, match="--request-timeout"):
            Settings.load({"KIMI_REQUEST_TIMEOUT": "30"}, {"request_timeout": "abc"})

    def test_secret_never_shows(self) -> None:
        secret = Secret(TOKEN)
        assert TOKEN not in repr(secret)
        assert TOKEN not in str(secret)
        assert TOKEN not in f"{secret}"
        assert secret.reveal() == TOKEN
        settings = Settings.load({"ACEDATACLOUD_API_TOKEN": TOKEN, "KIMI_MCP_AUTH_TOKENS": "alice:" + "a" * 20})
        for shown in (repr(settings), str(settings), json.dumps(settings.masked())):
            assert TOKEN not in shown
            assert "a" * 20 not in shown
        assert settings.masked()["api_token"] == "set (****)"
        assert Settings().masked()["api_token"] == "not set"
        assert TOKEN in settings.secrets()
        assert "a" * 20 in settings.secrets()

    def test_a_database_password_in_the_store_url_is_a_secret(self) -> None:
        url = "postgresql://kimi:p%40ss-word-1@db.example:5432/chats?sslmode=require&password=second-secret"
        settings = Settings.load({"KIMI_STORE": url})
        assert {"p%40ss-word-1", "p@ss-word-1", "second-secret"} <= set(settings.secrets())
        shown = json.dumps(settings.masked())
        assert "ss-word" not in shown and "second-secret" not in shown
        assert settings.masked()["store"] == "postgresql://kimi:****@db.example:5432/chats?sslmode=require&password=****"
        assert Settings.load({"KIMI_STORE": "/tmp/kimi:pw@x.sqlite3"}).secrets() == ()
