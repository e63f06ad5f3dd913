"""What ships: the wheel's packages match the source tree, one version, the settings
explained from the one table (README and `switchboard init`), secrets from files."""

from __future__ import annotations

import re
import tomllib
from dataclasses import replace
from pathlib import Path

import pytest

from bot import DISTRIBUTION, __version__
from bot.runtime.cli import main
from bot.settings import DEFAULT_KEY_STORE, KEYS, Settings, SettingsError
from bot.settings_docs import reference_table

ROOT = Path(__file__).resolve().parents[2]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_wheel_lists_every_package_of_the_source_tree() -> None:
    listed = set(PYPROJECT["tool"]["setuptools"]["packages"])
    found = {".".join(p.parent.relative_to(ROOT).parts)
             for top in ("bot", "bridges", "storage") for p in (ROOT / top).rglob("__init__.py")}
    assert listed == found | {"bot.templates"}
    assert PYPROJECT["tool"]["setuptools"]["package-dir"] == {"bot.templates": "templates"}


def test_one_version_and_a_free_name(capsys: pytest.CaptureFixture[str]) -> None:
    assert PYPROJECT["project"]["name"] == DISTRIBUTION != "switchboard"
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "bot.__version__"}
    assert PYPROJECT["project"]["scripts"] == {"switchboard": "bot.runtime.cli:main"}
    with pytest.raises(SystemExit):
        main(["--version"])
    assert capsys.readouterr().out.strip() == f"switchboard {__version__} ({DISTRIBUTION})"


def test_the_readme_table_is_the_settings_table() -> None:
    readme = (ROOT / "README.md").read_text()
    assert reference_table() in readme, "run scripts/config_table.py into the README"


def test_init_writes_every_key_commented_at_its_default(tmp_path: Path) -> None:
    path = tmp_path / "switchboard.toml"
    assert main(["init", str(path)]) == 0
    text = path.read_text()
    from_file = Settings.load({}, path)
    assert replace(from_file, source="") == replace(Settings.load({}), source="")  # defaults
    for key in KEYS:
        assert key.env in text and f"# {key.name.rpartition('.')[2]} = " in text
    # Uncommented as written, every line is a key Switchboard knows, at a valid value.
    live = "\n".join(line.removeprefix("# ") if re.match(r"# [a-z_]+ = ", line) else line
                     for line in text.splitlines())
    flat: dict[str, object] = {}
    for name, value in tomllib.loads(live).items():
        flat.update({f"{name}.{k}": v for k, v in value.items()} if isinstance(value, dict)
                    else {name: value})
    assert set(flat) == {k.name for k in KEYS} | {f"{k.name}_file" for k in KEYS if k.secret}
    assert main(["init", str(path)]) == 2  # never overwritten unasked
    assert main(["init", str(path), "--force"]) == 0


def test_a_secret_from_a_file_and_never_both_ways(tmp_path: Path) -> None:
    secret = tmp_path / "matrix_password"
    secret.write_text("s3cret with spaces\n")
    env = {"SWITCHBOARD_MATRIX_HOMESERVER": "https://matrix.example.com",
           "SWITCHBOARD_MATRIX_USER": "@bot:example.com",
           "SWITCHBOARD_MATRIX_PASSWORD_FILE": str(secret)}
    matrix = Settings.load(env).matrix
    assert matrix is not None and matrix.password == "s3cret with spaces"
    with pytest.raises(SettingsError, match="both are set; keep one"):
        Settings.load({**env, "SWITCHBOARD_MATRIX_PASSWORD": "other"})
    with pytest.raises(SettingsError, match="cannot read"):
        Settings.load({**env, "SWITCHBOARD_MATRIX_PASSWORD_FILE": str(tmp_path / "gone")})
    with pytest.raises(SettingsError, match="SWITCHBOARD_MATRIX_USER_FILE: unknown setting"):
        Settings.load({**env, "SWITCHBOARD_MATRIX_USER_FILE": str(secret)})
    config = tmp_path / "s.toml"
    config.write_text(f'[matrix]\nhomeserver = "https://m.example.com"\nuser = "@b:example.com"'
                      f'\npassword_file = "{secret}"\n')
    loaded = Settings.load({}, config).matrix
    assert loaded is not None and loaded.password == "s3cret with spaces"


def test_the_image_and_compose_file_run_as_documented() -> None:
    """No Docker engine runs here: what can be held without one is."""
    import yaml

    dockerfile = (ROOT / "Dockerfile").read_text()
    assert "pip wheel" in dockerfile and "pip install --no-cache-dir /wheels/*.whl" in dockerfile
    user = [line.split()[1] for line in dockerfile.splitlines() if line.startswith("USER ")]
    assert user == ["switchboard"]  # the runtime stage runs as a non-root user
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert set(services) == {"redis", "switchboard", "worker"}
    redis = " ".join(services["redis"]["command"])
    assert "--appendonly yes" in redis and "--maxmemory-policy noeviction" in redis
    assert services["switchboard"]["command"] == ["run"]
    # The process that holds the Matrix bot's keys keeps them on a volume, where the
    # default key store is for the image's user.
    (keys,) = services["switchboard"]["volumes"]
    assert keys.split(":")[1] + "/matrix-keys" == \
        DEFAULT_KEY_STORE.replace("~", "/home/switchboard")
    assert services["worker"]["command"] == ["worker"]
    secret_keys = {k.env_file for k in KEYS if k.secret}
    for name in ("switchboard", "worker"):
        env = services[name]["environment"]
        files = {k for k in env if k.endswith("_FILE")}
        assert files and files <= secret_keys  # only settings that read files
        for secret in services[name]["secrets"]:
            assert f"/run/secrets/{secret}" in env.values()
            assert secret in compose["secrets"]
