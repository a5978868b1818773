"""capgate.testing: the pytest plugin and attack corpus for tool authors."""
