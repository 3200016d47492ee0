"""The generic JSON webhook: call events in, actions out, for any switch or app."""
