"""The gateway port and its EPX implementation. Capabilities reach EPX only through `port`."""
