"""pytest plugin (fixtures arrive with the harness)."""
