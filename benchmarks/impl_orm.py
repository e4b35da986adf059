"""SQLAlchemy ORM: a declarative class and ``AsyncSession``.

A fresh session per operation, as a web request would have, from
``async_sessionmaker(engine, expire_on_commit=False)`` so that an object outlives
its session. ``update`` re-attaches an object loaded earlier (in another session),
changes ``age`` and commits: the unit of work flushes one ``UPDATE ... SET age``.
"""

from __future__ import annotations

import itertools
from typing import Any

from sqlalchemy import String, select
from sqlalchemy.ext.asyncio import async_sessionmaker
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from benchmarks.backends import Backend
from benchmarks.common import (
    BATCH_SIZE,
    FIND_ALL_AGE,
    FIND_ALL_LIMIT,
    Dataset,
    Implementation,
    Operation,
    concurrent_lookups,
)
from benchmarks.impl_core import engine_for

__all__ = ["implementations"]


class Base(DeclarativeBase):
    pass


class OrmUser(Base):
    __tablename__ = "bench_users_orm"

    id: Mapped[int] = mapped_column(primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(100))
    email: Mapped[str] = mapped_column(String(200), unique=True)
    age: Mapped[int | None]


def implementations(backend: Backend) -> list[Implementation]:
    return [OrmImpl()]


class OrmImpl(Implementation):
    key = "orm"
    label = "SQLAlchemy ORM"
    table = OrmUser.__tablename__

    async def setup(self, backend: Backend) -> None:
        await super().setup(backend)
        self.engine = engine_for(backend)
        self.sessions = async_sessionmaker(self.engine, expire_on_commit=False)
        async with self.engine.begin() as conn:
            await conn.run_sync(Base.metadata.create_all)

    async def teardown(self) -> None:
        await self.engine.dispose()

    async def _find(self, id_: int) -> Any:
        async with self.sessions() as session:
            return await session.get(OrmUser, id_)

    async def find_by_id_hit(self, data: Dataset) -> Operation:
        find, id_ = self._find, data.hit_id
        assert await find(id_) is not None

        async def op() -> object:
            return await find(id_)

        return Operation(op)

    async def find_by_id_miss(self, data: Dataset) -> Operation:
        find, ids = self._find, iter(data.miss_ids)

        async def op() -> object:
            return await find(next(ids))

        return Operation(op, max_calls=len(data.miss_ids))

    async def insert(self, data: Dataset) -> Operation:
        sessions, rows = self.sessions, self.rows

        async def op() -> object:
            name, email, age = rows.row()
            user = OrmUser(name=name, email=email, age=age)
            async with sessions() as session:
                session.add(user)
                await session.commit()
            return user.id

        return Operation(op, rows_written=1)

    async def update(self, data: Dataset) -> Operation:
        sessions, rows = self.sessions, self.rows
        async with sessions() as session:
            loaded = (
                await session.scalars(select(OrmUser).where(OrmUser.id.in_(data.update_ids)))
            ).all()
        objects = itertools.cycle(loaded)

        async def op() -> object:
            user = next(objects)
            async with sessions() as session:
                session.add(user)
                user.age = rows.next_age()
                await session.commit()
            return user

        return Operation(op, updated_ids=data.update_ids)

    async def insert_batch(self, data: Dataset) -> Operation:
        sessions, rows = self.sessions, self.rows

        async def op() -> object:
            users = [OrmUser(name=n, email=e, age=a) for n, e, a in rows.rows(BATCH_SIZE)]
            async with sessions() as session:
                session.add_all(users)
                await session.commit()
            return users

        return Operation(op, rows_written=BATCH_SIZE)

    async def find_all(self, data: Dataset) -> Operation:
        sessions = self.sessions

        async def op() -> object:
            stmt = (
                select(OrmUser)
                .where(OrmUser.age == FIND_ALL_AGE)
                .order_by(OrmUser.id.desc())
                .limit(FIND_ALL_LIMIT)
            )
            async with sessions() as session:
                return (await session.scalars(stmt)).all()

        got = await op()
        assert isinstance(got, list | tuple) and len(got) == FIND_ALL_LIMIT
        return Operation(op)

    async def concurrent_find(self, data: Dataset) -> Operation:
        return concurrent_lookups(self._find, data.concurrent_ids, "engine pool_size=10")
