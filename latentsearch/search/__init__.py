"""Search requests, fusion and explanations."""
