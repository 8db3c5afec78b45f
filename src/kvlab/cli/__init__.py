"""kvlab command line interface (``kvlab --help``)."""
