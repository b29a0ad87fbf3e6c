"""Where a collection's items live: one folder (local) or Ray shards."""
