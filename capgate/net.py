"""Placeholder: the network gate lands with issue 3."""
