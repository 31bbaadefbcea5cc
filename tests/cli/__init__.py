"""The command line: flags, start-up refusals and the user-facing commands."""
