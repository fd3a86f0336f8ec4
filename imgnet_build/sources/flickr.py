"""Placeholder: the flickr source is being written (issue 3)."""
