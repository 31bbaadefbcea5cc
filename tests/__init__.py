"""The test suite, laid out by layer; shared fixtures in conftest.py, the fake and harness in support/."""
