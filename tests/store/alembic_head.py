"""The newest revision among the migration scripts, read by Alembic from the files themselves.

Tests compare a migrated store with it instead of a hard-coded id, so that adding a migration
does not mean editing every test that checks "the store is at head".
"""

from __future__ import annotations

from alembic.script import ScriptDirectory

from blackbox.store.migrate import MIGRATIONS

HEAD = ScriptDirectory(str(MIGRATIONS)).get_current_head()
