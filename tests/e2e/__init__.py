"""Real subprocess servers end to end: every transport and protocol era, a load run, the
benchmark smoke run."""
