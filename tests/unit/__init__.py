"""Pure parts and the chat and upstream layers, without sockets or MCP: one file per module under
test, or `httpx2.MockTransport` in place of the network."""
