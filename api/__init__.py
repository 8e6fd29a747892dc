"""The HTTP API and the `lastmeter` command line."""
