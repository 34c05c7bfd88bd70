"""The zonewatch application: the ``zonewatch`` command (``cli``), the demo,
the embedded broker launcher and the ``broker``/``topics``/``config``
commands. It sits on top of everything else; nothing imports it except
``zonewatch.__main__`` and the tests."""
