"""Tests of server.coordinator.core.db helpers."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import text

from server.coordinator.core.db import alembic_config, check_db, make_engine


def test_make_engine_sqlite_creates_directory_and_enforces_foreign_keys(tmp_path: Path) -> None:
    # Execute
    engine = make_engine(f"sqlite:///{tmp_path / 'a' / 'b' / 'x.db'}")

    # Assert
    with engine.connect() as connection:
        assert connection.execute(text("PRAGMA foreign_keys")).scalar() == 1
    assert (tmp_path / "a" / "b").is_dir()
    engine.dispose()


def test_check_db_unreachable_false() -> None:
    engine = make_engine("postgresql+psycopg://nobody@127.0.0.1:1/none?connect_timeout=1")
    assert check_db(engine) is False


def test_alembic_config_sets_script_location_in_code() -> None:
    config = alembic_config("postgresql+psycopg://u:p%40ss@h/db")
    assert Path(config.get_main_option("script_location"), "env.py").is_file()
    assert config.attributes["url"] == "postgresql+psycopg://u:p%40ss@h/db"
