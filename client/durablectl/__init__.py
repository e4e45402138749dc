"""durablectl: the command-line client of durable, durable workflows in PostgreSQL."""
