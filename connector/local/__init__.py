"""Local stand-ins for what production provides: Apache Kafka, NXCloud, and `up`."""
