"""Examples for downstream teams; not part of the connector package."""
