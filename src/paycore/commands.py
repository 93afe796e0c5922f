"""The process roles behind the `paycore` command: serve, migrate, reconcile, admin, up."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import resource
import sys
import tempfile

from paycore.config import Settings, load_settings


def dispatch(args: argparse.Namespace) -> int:
    command = args.command
    if command == "migrate":
        return migrate_command()
    if command == "serve":
        return serve_command(workers=args.workers, port=args.port)
    if command == "reconcile":
        return reconcile_command()
    if command == "worker":
        from paycore.worker import run as run_worker

        return run_worker()
    if command == "admin":
        from paycore.merchants import admin_cli

        return admin_cli.run(args)
    if command == "up":
        from paycore.up import run as run_up

        return run_up()
    raise SystemExit(f"unknown command {command}")


def migrate_command() -> int:
    from paycore.platform.db.migrate import MigrationError, migrate
    from paycore.platform.observability.logging import configure_logging, flush_logs

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_queue_max, stream=sys.stderr)
    if settings.database_url is None:
        print("paycore migrate: DATABASE_URL is required", file=sys.stderr)
        return 2
    try:
        applied = asyncio.run(
            migrate(
                settings.database_url,
                statement_timeout=settings.migration_statement_timeout,
                lock_timeout=settings.migration_lock_timeout,
            )
        )
    except MigrationError as exc:
        print(f"paycore migrate: {exc}", file=sys.stderr)
        return 1
    finally:
        flush_logs()
    print(f"migrations applied: {applied or 'none (up to date)'}")
    return 0


def raise_nofile_limit(wanted: int = 65536) -> None:
    """RES-M4: raise the soft RLIMIT_NOFILE towards the hard limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(hard, wanted)
    if soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def prepare_metrics_dir() -> str:
    """prometheus_client multiprocess mode for several workers: `PROMETHEUS_MULTIPROC_DIR` (a fresh
    temporary directory unless set), emptied of an earlier run's files before workers start.

    Nothing may have imported prometheus_client in this process yet (it picks its value class at
    import, and workers are forked); if something did, workers are spawned instead of forked."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR") or tempfile.mkdtemp(prefix="paycore-metrics-")
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    os.makedirs(directory, exist_ok=True)
    for name in os.listdir(directory):
        if name.endswith(".db"):
            with contextlib.suppress(FileNotFoundError):
                os.remove(os.path.join(directory, name))
    if "prometheus_client.values" in sys.modules:
        import multiprocessing

        multiprocessing.set_start_method("spawn", force=True)
    return directory


def serve_command(*, workers: int | None = None, port: int | None = None) -> int:
    from granian import Granian
    from granian.constants import HTTPModes, Interfaces, Loops
    from granian.http import HTTP1Settings, HTTP2Settings

    if workers is not None:
        os.environ["PAYCORE_WORKERS"] = str(workers)
    if port is not None:
        os.environ["PAYCORE_HTTP_PORT"] = str(port)
    settings = load_settings()  # validate before spawning workers
    raise_nofile_limit()
    if settings.workers > 1:
        prepare_metrics_dir()
    server = Granian(
        "paycore.app:create_app",
        factory=True,
        address=settings.http_host,
        port=settings.http_port,
        interface=Interfaces.ASGI,
        workers=settings.workers,
        loop=Loops.uvloop,
        http=HTTPModes.auto,
        backpressure=settings.backpressure,
        http1_settings=HTTP1Settings(header_read_timeout=int(settings.header_read_timeout * 1000)),
        http2_settings=HTTP2Settings(
            max_concurrent_streams=settings.h2_max_streams,
            max_frame_size=settings.h2_max_frame,
            max_headers_size=settings.max_header_bytes,
        ),
        log_access=False,
        workers_kill_timeout=int(settings.shutdown_timeout) + 5,
        respawn_failed_workers=True,
    )
    server.serve()
    return 0


async def _reconcile(settings: Settings) -> dict[str, int]:
    from paycore.bootstrap import build_container

    container = await build_container(settings, application_name="paycore-reconcile")
    try:
        return await container.payments.reconcile(older_than=settings.reconcile_after)
    finally:
        await container.aclose()


def reconcile_command() -> int:
    from paycore.kernel import codec
    from paycore.platform.observability.logging import configure_logging, flush_logs

    settings = load_settings()
    configure_logging(settings.log_level, settings.log_queue_max, stream=sys.stderr)
    try:
        counts = asyncio.run(_reconcile(settings))
    finally:
        flush_logs()
    print(codec.line(counts))
    return 0
