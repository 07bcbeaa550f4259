from pathlib import Path

import pytest

from config.settings import Settings, SettingsError, describe, markdown_table


def test_defaults_need_no_environment() -> None:
    s = Settings.from_env({})
    assert s.nats.url is None and s.database.url is None
    assert s.embedded
    assert s.server.port == 8000


def test_values_are_parsed_by_type() -> None:
    s = Settings.from_env(
        {
            "WEDSYNC_NATS_URL": "nats://a:4222,nats://b:4222",
            "WEDSYNC_DATABASE_URL": "postgresql://u@h/db",
            "WEDSYNC_PORT": "9001",
            "WEDSYNC_DATA_DIR": "/srv/wedsync",
            "WEDSYNC_WORKER_RETRY_BASE_DELAY": "0.5",
        }
    )
    assert s.server.port == 9001
    assert s.data_dir == Path("/srv/wedsync")
    assert s.worker.retry_base_delay == 0.5
    assert not s.embedded


def test_bad_value_names_the_variable() -> None:
    with pytest.raises(SettingsError, match="WEDSYNC_PORT"):
        Settings.from_env({"WEDSYNC_PORT": "eighty"})


def test_round_trip_through_child_environment() -> None:
    s = Settings.from_env({"WEDSYNC_PORT": "1234", "WEDSYNC_NATS_URL": "nats://x:1"})
    assert Settings.from_env(s.to_env()) == s


def test_readme_documents_every_setting() -> None:
    readme = (Path(__file__).parent.parent / "README.md").read_text()
    missing = [env for env, _, _ in describe() if f"`{env}`" not in readme]
    assert missing == []
    # defaults and meanings too: regenerate with `python -m config.settings`
    assert markdown_table() in readme
