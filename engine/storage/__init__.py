"""SQL storage (the audit trail, its models and migrations) and the outbox that feeds it."""
