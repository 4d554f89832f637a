"""One root exception, and a small family per concern."""


class ConnectorError(Exception):
    """Root of every error the connector raises on purpose."""


class ConfigError(ConnectorError):
    """A setting is missing or invalid; the message names the variable."""


class BrokerError(ConnectorError):
    """The local Kafka broker cannot be prepared, started or stopped."""


class TopicError(ConnectorError):
    """Topics cannot be described or created."""


class SpoolError(ConnectorError):
    """The local spool cannot take a record: full, or the disk failed."""


class KafkaAccessError(ConnectorError):
    """Kafka refused this client: its login, its TLS certificates or its ACLs."""
