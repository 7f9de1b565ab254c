"""The local buffer: SQLite in WAL mode, the only place a reading must reach before it counts as taken."""

from blackbox.buffer.repository import Buffer, BufferError, Committed, StoredBatch

__all__ = ["Buffer", "BufferError", "Committed", "StoredBatch"]
