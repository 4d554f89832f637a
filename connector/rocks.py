"""rocksdict, the `rocksdict` extra that the RocksDB stores (the worker's, the reconciler's)
are made with: imported when a store is opened, a missing install named with its setting."""

from __future__ import annotations

from types import ModuleType

from connector.errors import ConfigError


def rocksdict(variable: str) -> ModuleType:
    try:
        import rocksdict as module
    except ImportError:  # pragma: no cover - the image and the dev install have it
        raise ConfigError(
            f"{variable}=rocksdb:// needs rocksdict: pip install 'nxcloud-connector[rocksdict]'"
        ) from None
    return module
