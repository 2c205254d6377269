"""CLI subcommands, one module per feature (see t2l_core.cli.COMMAND_MODULES)."""
