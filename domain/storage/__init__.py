"""How the application's aggregates and events are stored and read back: the group commit, its
one-round-trip insert on PostgreSQL, the repository's cache and the mapper. Mechanics, no rules of
the domain: the use cases in domain.application use them and name none of their details."""
