"""Command logic as plain functions over typed options that return reports (the CLI only renders them)."""
