"""The settings explained, from the one table of keys (``bot.settings.KEYS``): the README's
configuration reference and the commented file `switchboard init` writes. Both are
made here, so neither can drift from what Switchboard reads."""

from __future__ import annotations

import json

from bot.settings import KEYS, Key


def _meaning(key: Key) -> str:
    if not key.secret:
        return key.help
    return (f"{key.help} Secret: or `{key.env_file}`, a file holding it (a Docker or "
            "Kubernetes secret).")


def reference_table() -> str:
    """The README's table: variable, TOML key, default, meaning."""
    lines = ["| variable | TOML key | default | meaning |", "| --- | --- | --- | --- |"]
    for key in KEYS:
        default = f"`{key.default}`" if key.default else "—"
        lines.append(f"| `{key.env}` | `{key.name}` | {default} | {_meaning(key)} |")
    return "\n".join(lines) + "\n"


def _toml_key(key: Key) -> str:
    return key.name.rpartition(".")[2]


def _entry(key: Key) -> list[str]:
    lines = [f"# {line}" for line in _meaning(key).replace("`", "").splitlines()]
    lines.append(f"# (environment: {key.env})")
    if key.secret:
        lines.append(f'# {_toml_key(key)}_file = "/run/secrets/{key.name.replace(".", "_")}"')
    value = json.dumps(key.default) if key.default is not None else '""'
    lines.append(f"# {_toml_key(key)} = {value}")
    return lines


def example_toml() -> str:
    """Every key, commented out at its default, with what it means: a starting point
    for `--config` (or SWITCHBOARD_CONFIG)."""
    out = ["# Switchboard's settings. Every key is here, commented out at its default;",
           "# uncomment and edit what you need, then check with:",
           "#   switchboard --config THIS_FILE doctor",
           "# Each key can instead come from the environment (named below each key); the",
           "# environment wins. Secrets can come from files: `<key>_file = \"/path\"`.",
           ""]
    top = [k for k in KEYS if "." not in k.name]
    sections: dict[str, list[Key]] = {}
    for key in KEYS:
        if "." in key.name:
            sections.setdefault(key.name.partition(".")[0], []).append(key)
    for key in top:
        out += [*_entry(key), ""]
    for section, keys in sections.items():
        out += [f"[{section}]", ""]
        for key in keys:
            out += [*_entry(key), ""]
    return "\n".join(out).rstrip("\n") + "\n"
