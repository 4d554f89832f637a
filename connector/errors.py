"""One root exception, and a small family per concern.

ConnectorError                what the connector raises on purpose     (CLI exit 5)
├── ConfigError               a setting is missing or invalid          (CLI exit 3)
├── KafkaUnreachable          Kafka cannot be reached or answered no   (CLI exit 4)
│   ├── TopicError            topics cannot be described or created
│   └── KafkaAccessError      its login, TLS certificates or ACLs are refused
├── BrokerError               the local broker cannot run
├── SpoolError                the spool cannot take a record
├── SchemaError               a schema is unknown, or a change would break its readers
│   └── SchemaRefused         the schema registry refuses a schema     (CLI exit 6)
├── RegistryUnreachable       the schema registry cannot be reached    (CLI exit 7)
├── OutputClosed              the reader of a command's output left    (CLI exit 0)
└── InputError                what NXCloud sent cannot be used (also a ValueError)
    ├── Invalid               a push that is not a documented DR
    ├── Refused               a push refused at the HTTP edge, with its status
    ├── Malformed             a CDR answer that is not the documented JSON
    └── Unusable              a raw record that cannot become an observation
"""


class ConnectorError(Exception):
    """Root of every error the connector raises on purpose; `exit_code` is the CLI's."""

    exit_code = 5


class ConfigError(ConnectorError):
    """A setting is missing or invalid; the message names the variable."""

    exit_code = 3


class KafkaUnreachable(ConnectorError):
    """Kafka cannot be reached, timed out, or refused what was asked of it."""

    exit_code = 4


class TopicError(KafkaUnreachable):
    """Topics cannot be described or created."""


class BrokerError(ConnectorError):
    """The local Kafka broker cannot be prepared, started or stopped."""


class SpoolError(ConnectorError):
    """The local spool cannot take a record: full, or the disk failed."""


class InputError(ConnectorError, ValueError):
    """What NXCloud sent cannot be used; the message says why."""


class Invalid(InputError):
    """The push is not a DR the provider documents; the message says why."""


class Refused(InputError):
    """A push refused before it was read whole: `status` is the HTTP answer."""

    def __init__(self, status: int, reason: str, body: bytes | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.body = body


class Malformed(InputError):
    """The CDR answer is not the documented JSON."""


class Unusable(InputError):
    """The record cannot be turned into an observation; the message says why."""


class SchemaError(ConnectorError):
    """A schema is unknown, or a schema change would break its readers."""


class KafkaAccessError(KafkaUnreachable):
    """Kafka refused this client: its login, its TLS certificates or its ACLs."""


class SchemaRefused(SchemaError):
    """The schema registry refuses a schema (incompatible, invalid); names the subject."""

    exit_code = 6


class RegistryUnreachable(ConnectorError):
    """The schema registry cannot be reached, or answered with an error of its own."""

    exit_code = 7


class OutputClosed(ConnectorError):
    """Whoever read a command's output went away (`| head`): the command is done."""

    exit_code = 0
