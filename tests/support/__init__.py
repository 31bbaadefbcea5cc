"""What the tests and benchmarks build on: the loopback fake of the Ace API (fake_ace) and the
client harness that connects to kimi-mcp over every transport (harness); and the fake's own tests."""
