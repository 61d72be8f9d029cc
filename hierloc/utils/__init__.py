"""Small shared helpers: atomic file writes, image reading, thread settings."""
