"""Print the README's configuration table from bot/settings.py's KEYS (the one source)."""

from bot.settings import KEYS

print("| variable | TOML key | default | meaning |")
print("| --- | --- | --- | --- |")
for key in KEYS:
    default = f"`{key.default}`" if key.default else "—"
    print(f"| `{key.env}` | `{key.name}` | {default} | {key.help} |")
