"""The local buffer: SQLite in WAL mode, the only place a reading must reach before it counts as taken."""

from blackbox.buffer.repository import (
    Backlog,
    Buffer,
    BufferError,
    BufferFull,
    Committed,
    DbCall,
    Dropped,
    StoredBatch,
    Usage,
)

__all__ = ["Backlog", "Buffer", "BufferError", "BufferFull", "Committed", "DbCall", "Dropped", "StoredBatch", "Usage"]
