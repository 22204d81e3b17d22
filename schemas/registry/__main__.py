"""``python -m bizbus.schemas.registry --host 127.0.0.1 --port 8081 --db PATH``: serve the embedded registry.

Runs until SIGTERM/SIGINT. Exits with code 2 and a one-line message (no traceback) when the port is taken
or the store cannot be opened.
"""

from __future__ import annotations

import argparse
import logging
import sqlite3
import sys

from bizbus.schemas.registry.server import RegistryPortInUse, run


def main(argv: list[str] | None = None) -> int:
    """Parse the command line, serve, and return the exit code."""
    parser = argparse.ArgumentParser(
        prog="python -m bizbus.schemas.registry",
        description="Embedded Confluent-compatible Avro schema registry backed by one SQLite file.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="listen address (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=8081, help="listen port (default 8081; 0 = any free port)"
    )
    parser.add_argument("--db", required=True, help="SQLite file holding the registry (created if missing)")
    parser.add_argument("--log-level", default="INFO", help="logging level (default INFO)")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        run(args.host, args.port, args.db)
    except RegistryPortInUse as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    except (OSError, sqlite3.Error) as exc:
        print(f"error: the schema registry cannot start: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
