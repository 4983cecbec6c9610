"""The ``aptfleet`` command line and its command groups."""
