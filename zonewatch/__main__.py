"""``python -m zonewatch``: the ``zonewatch`` command."""

from zonewatch.app.cli import main

main()
