"""Every outgoing text of Switchboard, as jinja2 templates (see bot/render.py).

Shipped inside the wheel as the package ``bot.templates`` (pyproject.toml maps this
folder there), so an installed copy renders them without the source checkout."""
