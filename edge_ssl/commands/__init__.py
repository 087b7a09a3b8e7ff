"""One module per CLI command (Typer's one-file-per-command layout)."""
