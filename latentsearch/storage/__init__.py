"""SQLite store, metadata filters, full-text search."""
