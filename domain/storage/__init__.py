"""How the application's aggregates and events are stored and read back: the group commit (given the
store's own insert, api.lockedinsert's on PostgreSQL), the repository's cache and the mapper.
Mechanics, no rules of the domain, and no database code: the use cases in domain.application use
them and name none of their details."""
