"""The catalogue's model ids as the tests expect them, in order: written out here, not read from the
code, so a change to the table is seen by the tests that list models."""

ALL_IDS = [
    "kimi-k3",
    "kimi-k3.1-pro",
    "kimi-k3.1-pro-highspeed",
    "kimi-k2.7-code",
    "kimi-k2.7-code-highspeed",
    "kimi-k2.6",
    "kimi-k2.5",
    "kimi-k2-thinking",
    "kimi-k2-thinking-turbo",
    "kimi-k2-instruct-0905",
    "kimi-k2-0905-preview",
    "kimi-k2-turbo-preview",
    "kimi-k2-0711-preview",
]
CURRENT_IDS = [
    "kimi-k3", "kimi-k3.1-pro", "kimi-k3.1-pro-highspeed", "kimi-k2.7-code", "kimi-k2.7-code-highspeed",
    "kimi-k2.6", "kimi-k2-thinking", "kimi-k2-thinking-turbo",
]
"""The ids not reported retired or of unknown status (what error hints suggest)."""
DEFAULT_ID = "kimi-k3"
