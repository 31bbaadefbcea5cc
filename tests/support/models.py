"""The catalogue's model ids as the tests expect them, in order: written out here, not read from the
code, so a change to the table is seen by the tests that list models."""

ALL_IDS = [
    "kimi-k2.5",
    "kimi-k2-thinking",
    "kimi-k2-thinking-turbo",
    "kimi-k2-instruct-0905",
    "kimi-k2-0905-preview",
    "kimi-k2-turbo-preview",
    "kimi-k2-0711-preview",
]
