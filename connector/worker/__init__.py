"""The Faust worker: its app and agents, the consumer and table, its probe and metrics."""
