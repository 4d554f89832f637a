"""nxcloud-connector: NXCloud voice call outcomes into Kafka."""

__version__ = "0.1.0"
