"""flue-tui."""
