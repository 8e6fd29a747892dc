"""The read side: the event log as the read side sees it, and the views built from it."""
