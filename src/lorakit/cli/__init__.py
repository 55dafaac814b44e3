"""The ``lorakit`` command line: a table of subcommands, one module each."""
