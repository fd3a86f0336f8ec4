"""Placeholder: the wikimedia source is being written (issue 3)."""
