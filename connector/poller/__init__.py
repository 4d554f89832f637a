"""The poller: the CDR query API paged into Kafka by one poller per account; backfill."""
