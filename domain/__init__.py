"""The write side of lastmeter: aggregates, their events, case-kind workflows."""
