"""nxcloud-connector: NXCloud voice call outcomes into Kafka."""

from importlib.metadata import version

# The one version is pyproject.toml's, as the installed package's metadata carries it.
__version__ = version("nxcloud-connector")
