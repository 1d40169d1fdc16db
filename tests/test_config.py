from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from pitwall.errors import SandboxError
from pitwall_executor.config import load_config


def test_embedded_defaults_live_under_the_data_dir(tmp_path: Path) -> None:
    cfg = load_config({"PITWALL_DATA_DIR": str(tmp_path)})
    assert cfg.database_url == f"sqlite:///{tmp_path}/pitwall.db"
    assert cfg.queue_url == "memory://" and cfg.sandbox == "gvisor"
    assert cfg.lake_dir == tmp_path / "lake" and cfg.artifacts_dir == tmp_path / "artifacts"


def test_file_then_env_then_overrides(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('db_url = "postgresql+psycopg://a@b/c"\nworkers = 3\n[limits]\ntimeout_s = 30\n'
                    "memory_mb = 512\n")
    env = {"PITWALL_CONFIG": str(path), "PITWALL_LIMITS__TIMEOUT_S": "12", "PITWALL_WORKERS": "4"}
    cfg = load_config(env, workers=5)
    assert cfg.database_url == "postgresql+psycopg://a@b/c"
    assert cfg.limits.timeout_s == 12.0 and cfg.limits.memory_mb == 512
    assert cfg.workers == 5


def test_bad_values_name_the_setting(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="sandbox"):
        load_config({"PITWALL_SANDBOX": "chroot", "PITWALL_DATA_DIR": str(tmp_path)})
    with pytest.raises(FileNotFoundError, match="PITWALL_CONFIG"):
        load_config({"PITWALL_CONFIG": str(tmp_path / "missing.toml")})


def test_a_clients_variables_are_not_settings_and_a_typo_still_is_refused(tmp_path: Path) -> None:
    # A kernel started by JupyterLab inherits PITWALL_API_URL and PITWALL_TOKEN from the
    # server extension; a researcher may set PITWALL_RESEARCHER: the CLI must still load.
    env = {"PITWALL_DATA_DIR": str(tmp_path), "PITWALL_API_URL": "http://127.0.0.1:1",
           "PITWALL_TOKEN": "pw_x", "PITWALL_RESEARCHER": "alice",
           "PITWALL_TEST_PG_URL": "postgresql+psycopg://postgres@127.0.0.1/postgres"}
    assert load_config(env).data_dir == tmp_path
    with pytest.raises(ValidationError, match="db_ulr"):
        load_config({**env, "PITWALL_DB_ULR": "sqlite:///x.db"})


def test_official_runs_default_to_the_retail_preset_unless_configured(tmp_path: Path) -> None:
    assert load_config({"PITWALL_DATA_DIR": str(tmp_path)}).default_costs_preset == "retail"
    cfg = load_config({"PITWALL_DATA_DIR": str(tmp_path),
                       "PITWALL_DEFAULT_COSTS_PRESET": "frictionless"})
    assert cfg.default_costs_preset == "frictionless"
    with pytest.raises(ValidationError, match="default_costs_preset"):
        load_config({"PITWALL_DATA_DIR": str(tmp_path), "PITWALL_DEFAULT_COSTS_PRESET": "cheap"})


def test_the_default_data_dir_is_one_the_sandbox_may_mount(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    from pitwall_executor.sandbox import oci

    monkeypatch.delenv("XDG_DATA_HOME", raising=False)
    monkeypatch.delenv("PITWALL_DATA_DIR", raising=False)
    monkeypatch.setattr(os, "geteuid", lambda: 0)
    root_dir = load_config(environ={}).data_dir
    # Root's home is a host system path no sandbox mounts from (make demo ran as root
    # failed every attempt on it): root's data dir is the system one.
    assert root_dir == Path("/var/lib/pitwall")
    with pytest.raises(SandboxError, match="host system path"):
        oci.check_source(Path("/root"))
    monkeypatch.setattr(os, "geteuid", lambda: 1000)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert load_config(environ={}).data_dir == tmp_path / ".local" / "share" / "pitwall"
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "xdg"))
    assert load_config(environ={}).data_dir == tmp_path / "xdg" / "pitwall"
