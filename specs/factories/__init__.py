"""Models written in Python for `architecture: {factory: ...}` specs of the example catalogue."""
