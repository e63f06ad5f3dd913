"""Print the README's configuration table (made from bot/settings.py's KEYS, the one source)."""

from bot.settings_docs import reference_table

print(reference_table(), end="")
