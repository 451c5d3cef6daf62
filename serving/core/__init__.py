"""What the service does, free of any transport: models, micro-batching, the index, and the errors."""
