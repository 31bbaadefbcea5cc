"""Behaviour through a real MCP client against the loopback fake: tools, streaming, progress,
thinking, conversations, prompts, faults and retries, security, fuzzing."""
