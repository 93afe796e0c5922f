"""The EPX implementation of the gateway port: `wire` (pure encode/parse), `codes` (static
response-code table), `client` (Server Post over a pooled aiohttp session) and `reporting`
(transaction lookups for reconciliation)."""
