"""Placeholder: the process gate lands with issue 4."""
