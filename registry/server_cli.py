"""``interp-registry-server``: operate the registry's server without manage.py or ``celery -A``.

    interp-registry-server migrate                      # create or upgrade the database
    interp-registry-server serve --port 8000            # the ASGI web server (collects static files first)
    interp-registry-server worker                       # a Celery worker for runs (queues cpu,maintenance)
    interp-registry-server worker --gpu                 # a GPU worker (queue gpu; one per GPU)
    interp-registry-server worker --queues maintenance  # the maintenance queue's own worker
    interp-registry-server beat                         # the periodic reaper (one per deployment)
    interp-registry-server createuser alice             # a user and a new API token (printed)
    interp-registry-server load-examples --preset tiny  # the example findings
    interp-registry-server manage check --deploy        # any other Django management command

Settings: ``DJANGO_SETTINGS_MODULE`` (default ``registry.settings.base``, the embedded default:
SQLite and a SQLite broker; ``registry.settings.production`` with PostgreSQL and Redis), or
``--settings``. Data (the embedded database and broker, artifacts, static files, beat's schedule)
live in one directory, ``REGISTRY_DATA_DIR`` (see registry/datadir.py); ``--data-dir`` sets it.

The registry's packages (``registry``, ``worker``, ``plugins``) always come from this
installation: the current directory is taken off ``sys.path`` before anything is imported, so a
user's own ``worker.py``, ``registry.py`` or ``plugins/`` in the folder the command runs from is
never loaded in their place, and the Celery app is passed as an object, never found by name (and
created from an empty folder: Celery's Django fixup would put the current directory back first on
sys.path, see ``_celery_app``).
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

#: the folder holding this installation's registry/, worker/ and plugins/
INSTALL_ROOT = Path(__file__).resolve().parents[1]
OWN_PACKAGES = ("registry", "worker", "plugins")
DEFAULT_SETTINGS = "registry.settings.base"


class ShadowedPackage(RuntimeError):
    """One of the registry's packages was imported from somewhere else than this installation."""


def _without_current_directory(path: list[str], cwd: str) -> list[str]:
    """``sys.path`` without the entries that mean the current directory ('' and its spellings),
    unless that directory is this installation itself (a source checkout run from its root)."""
    here = os.path.realpath(cwd)
    kept = []
    for entry in path:
        resolved = os.path.realpath(os.path.join(cwd, entry))  # '' and '.' are the current directory
        if resolved == here and resolved != str(INSTALL_ROOT):
            continue
        kept.append(entry)
    return kept


def protect_imports() -> None:
    """Import the registry's packages from this installation and check they did come from it."""
    sys.path[:] = _without_current_directory(sys.path, os.getcwd())
    import importlib

    for name in OWN_PACKAGES:
        module = importlib.import_module(name)
        location = Path(getattr(module, "__file__", None) or next(iter(getattr(module, "__path__", [])), ""))
        if INSTALL_ROOT not in location.resolve().parents:
            raise ShadowedPackage(
                f"the module {name!r} was loaded from {location}, not from this installation ({INSTALL_ROOT}); "
                f"rename your own {name!r} or remove it from PYTHONPATH"
            )


def _setup(args: argparse.Namespace) -> Path:
    """Environment, import protection and django.setup(); returns the data directory."""
    if getattr(args, "settings", None):
        os.environ["DJANGO_SETTINGS_MODULE"] = args.settings
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", DEFAULT_SETTINGS)
    if getattr(args, "data_dir", None):
        os.environ["REGISTRY_DATA_DIR"] = str(Path(args.data_dir).expanduser().resolve())
    protect_imports()
    import django
    from django.conf import settings

    django.setup()
    _celery_app()  # now, from an empty folder: created later, it would put the current directory on sys.path
    data = Path(settings.DATA_DIR)
    data.mkdir(parents=True, exist_ok=True)
    return data


def _call(command: str, *args: str, **options: Any) -> None:
    from django.core.management import call_command

    call_command(command, *args, **options)


# ---------------------------------------------------------------- commands


def cmd_migrate(args: argparse.Namespace) -> int:
    _setup(args)
    _call("migrate", interactive=False, verbosity=args.verbosity)
    return 0


def collect_static(verbosity: int = 0) -> Path:
    """Collect the static files into STATIC_ROOT (in the data directory): only what changed is
    copied; production's manifest storage also writes hashed, compressed copies."""
    from django.conf import settings

    Path(settings.STATIC_ROOT).mkdir(parents=True, exist_ok=True)
    _call("collectstatic", interactive=False, verbosity=verbosity)
    return Path(settings.STATIC_ROOT)


def _server_choice(requested: str) -> str:
    if requested != "auto":
        return requested
    try:
        import gunicorn  # noqa: F401
        import uvicorn_worker  # noqa: F401
    except ImportError:
        return "uvicorn"
    return "gunicorn" if sys.platform != "win32" else "uvicorn"


def _default_workers() -> int:
    from django.conf import settings

    configured = os.environ.get("WEB_CONCURRENCY")
    if configured:
        return max(1, int(configured))
    # the embedded SQLite database takes one writer at a time: one process serves it best
    if settings.DATABASES["default"]["ENGINE"].endswith("sqlite3"):
        return 1
    return min(4, os.cpu_count() or 1)


def cmd_serve(args: argparse.Namespace) -> int:
    # as registry/asgi.py does, but before the settings are read here: the web pools its connections
    os.environ.setdefault("DATABASE_POOL_MAX_SIZE", "8")
    _setup(args)
    if not args.no_collectstatic:
        collect_static()
    from registry.asgi import application

    server = _server_choice(args.server)
    workers = args.workers or _default_workers()
    print(f"interp-registry-server: serving on http://{args.host}:{args.port}/ with {server} "
          f"({workers} worker{'s' if workers != 1 else ''})", file=sys.stderr, flush=True)
    if server == "uvicorn":
        if workers != 1:
            print("interp-registry-server: uvicorn serves with one process; install the 'production' extra "
                  "(gunicorn) for several", file=sys.stderr)
        import uvicorn

        # the application object, not an import string: nothing is looked up on sys.path
        uvicorn.run(application, host=args.host, port=args.port, server_header=False, log_level=args.log_level,
                    timeout_graceful_shutdown=10, proxy_headers=True,
                    forwarded_allow_ips=args.forwarded_allow_ips)
        return 0
    return _gunicorn(application, args, workers)


#: uvicorn workers under gunicorn, without a Server header (registry/asgi_worker.py)
GUNICORN_WORKER_CLASS = "registry.asgi_worker.Worker"


def _gunicorn(application: Any, args: argparse.Namespace, workers: int) -> int:
    # gunicorn's own command line chdir()s and puts the current directory first on sys.path; its
    # documented custom application (BaseApplication) does neither and takes the app as an object.
    from gunicorn.app.base import BaseApplication

    options = {
        "bind": f"{args.host}:{args.port}", "workers": workers, "worker_class": GUNICORN_WORKER_CLASS,
        "timeout": args.timeout, "loglevel": args.log_level, "forwarded_allow_ips": args.forwarded_allow_ips,
    }

    # gunicorn >= 25.1 opens a control socket, by default under $HOME: in the data directory instead
    # (a Unix socket's path is limited to about 100 bytes; beyond that, none)
    from django.conf import settings

    control = Path(settings.DATA_DIR) / "gunicorn.ctl"
    options["control_socket"] = str(control)
    options["control_socket_disable"] = len(str(control)) > 100

    class Server(BaseApplication):
        def load_config(self) -> None:
            for key, value in options.items():
                if key in self.cfg.settings:
                    self.cfg.set(key, value)

        def load(self) -> Any:
            return application

    Server().run()
    return 0


def _celery_app() -> Any:
    """The Celery app, created without the current directory on sys.path. Celery's Django fixup
    puts the current directory first on sys.path for good when the app is created, and its loader
    puts it there while it imports the task modules (``worker.tasks``, and whatever they import
    for the first time: numpy, scipy, pydantic...): a user's own fileinput.py or numpy.py in the
    folder the command runs from would be loaded in place of the real ones. So the app is created
    from an empty folder (taken off sys.path again) and its loader imports plainly."""
    import tempfile

    if "worker.celery" in sys.modules:
        return sys.modules["worker.celery"].app
    here = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="interp-registry-server-") as empty:
        os.chdir(empty)
        try:
            from worker.celery import app
        finally:
            os.chdir(here)
        inserted = {empty, os.path.realpath(empty)}
        sys.path[:] = [entry for entry in _without_current_directory(sys.path, here) if entry not in inserted]
    loader = app.loader

    def import_from_cwd(module: str, imp: Any = None, package: str | None = None) -> Any:
        return (imp or loader.import_module)(module, package=package)

    loader.import_from_cwd = import_from_cwd
    return app


def _queues(args: argparse.Namespace) -> str:
    if args.queues:
        return args.queues
    return "gpu" if args.gpu else "cpu,maintenance"


def cmd_worker(args: argparse.Namespace) -> int:
    data = _setup(args)
    app = _celery_app()
    queues = _queues(args)
    concurrency = args.concurrency or (1 if args.gpu else None)
    argv = ["worker", "-Q", queues, "--loglevel", args.log_level.upper()]
    if concurrency:
        argv += ["--concurrency", str(concurrency)]
    if args.name:
        argv += ["-n", args.name]
    if args.beat:
        argv += ["-B", "-s", str(data / "celerybeat-schedule")]
    argv += list(args.celery_args)
    print(f"interp-registry-server: worker on queues {queues}; data in {data}", file=sys.stderr, flush=True)
    return app.worker_main(argv) or 0


def cmd_beat(args: argparse.Namespace) -> int:
    data = _setup(args)
    app = _celery_app()
    schedule = data / "celerybeat-schedule"
    argv = ["beat", "-s", str(schedule), "--loglevel", args.log_level.upper(), *args.celery_args]
    print(f"interp-registry-server: beat; schedule in {schedule}", file=sys.stderr, flush=True)
    return app.start(argv) or 0


def cmd_createuser(args: argparse.Namespace) -> int:
    _setup(args)
    options: dict[str, Any] = {"email": args.email, "staff": args.staff}
    if args.token_name:
        options["name"] = args.token_name
    if args.expires_in_days is not None:
        options["expires_in_days"] = args.expires_in_days
    if args.password_stdin:
        options["password"] = sys.stdin.readline().rstrip("\n")
    elif args.password:
        from registry.api.management.commands.create_api_user import PROMPT

        options["password"] = PROMPT
    _call("create_api_user", args.username, **options)
    return 0


def cmd_load_examples(args: argparse.Namespace) -> int:
    _setup(args)
    _call("load_examples", preset=args.preset, no_reproduce=args.no_reproduce)
    return 0


def cmd_manage(args: argparse.Namespace) -> int:
    _setup(args)
    from django.core.management import execute_from_command_line

    execute_from_command_line(["interp-registry-server manage", *args.arguments])
    return 0


def cmd_where(args: argparse.Namespace) -> int:
    data = _setup(args)
    from django.conf import settings

    print(f"settings:    {os.environ['DJANGO_SETTINGS_MODULE']}")
    print(f"data:        {data}")
    print(f"database:    {settings.DATABASES['default']['ENGINE'].rsplit('.', 1)[-1]} "
          f"{settings.DATABASES['default']['NAME'] if 'sqlite' in settings.DATABASES['default']['ENGINE'] else ''}")
    print(f"artifacts:   {settings.ARTIFACT_ROOT}")
    print(f"static:      {settings.STATIC_ROOT}")
    print(f"beat:        {settings.CELERY_BEAT_SCHEDULE_FILENAME}")
    print(f"installed:   {INSTALL_ROOT}")
    return 0


# ---------------------------------------------------------------- parser


def parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--settings", help=f"the Django settings module (default: DJANGO_SETTINGS_MODULE or "
                                           f"{DEFAULT_SETTINGS})")
    common.add_argument("--data-dir", help="the data directory (default: REGISTRY_DATA_DIR, the checkout's var/ "
                                           "or the user's data directory)")
    main = argparse.ArgumentParser(prog="interp-registry-server",
                                   description="Run the Interpretability Findings Registry's server.")
    commands = main.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = commands.add_parser("migrate", parents=[common], help="create or upgrade the database")
    p.add_argument("-v", "--verbosity", type=int, default=1)
    p.set_defaults(handler=cmd_migrate)

    p = commands.add_parser("serve", parents=[common], help="the ASGI web server (API, dashboard, live stream)")
    p.add_argument("--host", default=os.environ.get("HOST", "127.0.0.1"))
    p.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    p.add_argument("--workers", type=int, default=0,
                   help="web processes (default: WEB_CONCURRENCY, else 1 on SQLite, else up to 4)")
    p.add_argument("--server", choices=["auto", "gunicorn", "uvicorn"], default="auto",
                   help="auto: gunicorn with uvicorn workers when the 'production' extra is installed, else uvicorn")
    p.add_argument("--timeout", type=int, default=60, help="seconds a request may take (gunicorn --timeout)")
    p.add_argument("--forwarded-allow-ips", default=os.environ.get("FORWARDED_ALLOW_IPS", "127.0.0.1"),
                   help="proxies trusted for X-Forwarded-* (see the README on API_NUM_PROXIES)")
    p.add_argument("--log-level", default="info")
    p.add_argument("--no-collectstatic", action="store_true",
                   help="serve without collecting static files first (WhiteNoise then serves them from the apps)")
    p.set_defaults(handler=cmd_serve)

    p = commands.add_parser("worker", parents=[common], help="a Celery worker (runs, maintenance)")
    p.add_argument("--gpu", action="store_true", help="consume the gpu queue (concurrency 1: one worker per GPU)")
    p.add_argument("--queues", "-Q", help="comma-separated queues (default: cpu,maintenance; gpu with --gpu)")
    p.add_argument("--concurrency", "-c", type=int, help="pool processes (default: CELERY_WORKER_CONCURRENCY)")
    p.add_argument("--name", "-n", help="the worker's node name (default: celery@HOST)")
    p.add_argument("--beat", "-B", action="store_true",
                   help="also run the beat in this worker (a single machine; its schedule in the data directory)")
    p.add_argument("--log-level", default="info")
    p.add_argument("celery_args", nargs=argparse.REMAINDER, help="after --: more `celery worker` options")
    p.set_defaults(handler=cmd_worker)

    p = commands.add_parser("beat", parents=[common], help="the periodic tasks' scheduler (one per deployment)")
    p.add_argument("--log-level", default="info")
    p.add_argument("celery_args", nargs=argparse.REMAINDER, help="after --: more `celery beat` options")
    p.set_defaults(handler=cmd_beat)

    p = commands.add_parser("createuser", parents=[common], help="create a user if needed and print a new API token")
    p.add_argument("username")
    p.add_argument("--email", default="")
    p.add_argument("--staff", action="store_true", help="staff may edit any finding")
    p.add_argument("--token-name", help="the token's name")
    p.add_argument("--expires-in-days", type=int)
    p.add_argument("--password", action="store_true", help="prompt for a password (the dashboard's sign-in)")
    p.add_argument("--password-stdin", action="store_true", help="read the password from standard input")
    p.set_defaults(handler=cmd_createuser)

    p = commands.add_parser("load-examples", parents=[common], help="the example findings, reproductions queued")
    p.add_argument("--preset", help="each plugin's named preset, e.g. tiny")
    p.add_argument("--no-reproduce", action="store_true", help="create them without queueing runs")
    p.set_defaults(handler=cmd_load_examples)

    p = commands.add_parser("manage", parents=[common], help="any Django management command (as manage.py)")
    p.add_argument("arguments", nargs=argparse.REMAINDER)
    p.set_defaults(handler=cmd_manage)

    p = commands.add_parser("where", parents=[common], help="print the settings module and where data is kept")
    p.set_defaults(handler=cmd_where)
    return main


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if getattr(args, "celery_args", None) and args.celery_args[0] == "--":
        args.celery_args = args.celery_args[1:]
    try:
        return int(args.handler(args) or 0)
    except ShadowedPackage as exc:
        print(f"interp-registry-server: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:
        from django.core.management import CommandError

        if not isinstance(exc, CommandError):
            raise
        print(f"interp-registry-server: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
