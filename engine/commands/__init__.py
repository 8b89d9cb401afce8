"""CLI subcommands, one module each (see engine.commands.cli)."""
