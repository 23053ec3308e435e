"""The ``tfchips`` command line: one small module per command."""
