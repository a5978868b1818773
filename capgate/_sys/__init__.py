"""Platform mechanisms, one per module, each picked once at import time."""
