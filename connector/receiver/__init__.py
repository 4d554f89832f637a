"""The receiver: DR pushes over HTTP, stored in Kafka or, while Kafka is away, the spool."""
