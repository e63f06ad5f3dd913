"""Switchboard: answer email from chat and chat from email."""

# The one place the version is set: pyproject.toml reads it (``dynamic``), `--version`
# prints it.
__version__ = "0.2.0"
# The distribution's name on the package index ("switchboard" there is another project);
# the command it installs is still `switchboard`.
DISTRIBUTION = "switchboard-mail-bridge"
