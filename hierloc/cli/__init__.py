"""The `hierloc` command line: one module per subcommand."""
