"""The hot read path: SQLAlchemy Core statements executed without a thread hop or ORM.

Why not the ORM session every other route uses: a plain ``def`` route's hop to a worker thread
and back, and SQLAlchemy's execution layer (sync, or async over greenlets), each cost more CPU
per request than psycopg alone needs for the whole two-query read — together more than the rest
of the request (figures: BENCHMARKS.md, "Findings for the core and service engineers", item 2).
So the few reads on the hot path (``GET /v1/jobs/{id}``) are written as Core statements,
compiled once per dialect by SQLAlchemy, and run by :class:`Reader`:

* PostgreSQL: psycopg's ``AsyncConnectionPool`` straight on the event loop. Connections are
  in autocommit (a read of committed rows needs no ``BEGIN``/``ROLLBACK`` round trips) and in
  the UTC time zone; psycopg prepares a statement after its fifth use. Its native types are the
  ones the models produce (``jsonb`` → dict, ``timestamptz`` → aware UTC datetime), so the
  statements may select only such columns — the reader bypasses SQLAlchemy's type processors.
* SQLite (the embedded default): the sync engine in a worker thread, with SQLAlchemy's types.

No pre-ping (a round trip per checkout): a read that fails because its connection died
(PostgreSQL restarted) has the pool drop its dead connections and runs once more — a read is
safe to repeat.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import anyio
from sqlalchemy import Engine, Select

from .db import psycopg_conninfo

if TYPE_CHECKING:
    from psycopg import AsyncConnection
    from psycopg.rows import DictRow
    from psycopg_pool import AsyncConnectionPool

Row = dict[str, Any]


class Reader:
    def __init__(self, url: str, engine: Engine, *, pool_size: int = 10) -> None:
        self._engine = engine
        self._pool: AsyncConnectionPool[AsyncConnection[DictRow]] | None = None
        self._compiled: dict[int, tuple[Select, str]] = {}
        if engine.dialect.name == "postgresql" and engine.dialect.driver == "psycopg":
            from psycopg.rows import dict_row
            from psycopg_pool import AsyncConnectionPool

            self._pool = AsyncConnectionPool(
                psycopg_conninfo(url),
                min_size=1,
                max_size=pool_size,
                open=False,
                kwargs={"autocommit": True, "row_factory": dict_row, "options": "-c TimeZone=UTC"},
            )

    async def open(self) -> None:
        if self._pool is not None:
            await self._pool.open(wait=False)

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()

    async def one(self, stmt: Select, params: dict[str, Any]) -> Row | None:
        rows = await self.all(stmt, params)
        return rows[0] if rows else None

    async def all(self, stmt: Select, params: dict[str, Any]) -> list[Row]:
        if self._pool is None:
            return await anyio.to_thread.run_sync(self._sync_all, stmt, params)
        import psycopg

        sql = self._sql(stmt)
        try:
            return await self._pg_all(sql, params)
        except psycopg.OperationalError:
            await self._pool.check()  # drops the connections that died with the server
            return await self._pg_all(sql, params)

    async def _pg_all(self, sql: str, params: dict[str, Any]) -> list[Row]:
        assert self._pool is not None
        if self._pool.closed:  # an app used without its lifespan (some tests)
            await self._pool.open(wait=False)
        async with self._pool.connection() as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()

    def _sql(self, stmt: Select) -> str:
        """The statement compiled once for this engine's dialect (named ``%(x)s`` params).
        Parameters whose SQL depends on the value (``IN`` lists, literal renderings) cannot
        be compiled once, so such statements are refused."""
        hit = self._compiled.get(id(stmt))
        if hit is None or hit[0] is not stmt:
            text = str(stmt.compile(dialect=self._engine.dialect))
            if "POSTCOMPILE" in text:
                raise ValueError("Reader statements cannot use expanding parameters: " + text)
            hit = self._compiled[id(stmt)] = (stmt, text)
        return hit[1]

    def _sync_all(self, stmt: Select, params: dict[str, Any]) -> list[Row]:
        with self._engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt, params)]
