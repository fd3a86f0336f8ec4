"""Placeholder: the openverse source is being written (issue 3)."""
