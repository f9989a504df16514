"""The ``graft`` command line: serve the API, manage API keys in the registry, drive a server."""

from __future__ import annotations

import json
import os
import sys
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from service import cli_remote, cli_render
from service.settings import Settings

if TYPE_CHECKING:  # SQLAlchemy and Alembic load only for the commands that use them
    from service.auth import KeyStore

app = typer.Typer(help="Graft: transfer learning as a service.", no_args_is_help=True)
keys_app = typer.Typer(
    help="API keys, written straight to the registry (GRAFT_DATABASE_URL or GRAFT_HOME): "
    "whoever can reach the database is the administrator, no server needed.",
    no_args_is_help=True,
)
app.add_typer(keys_app, name="keys")
console = cli_render.make_console()

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]


@app.callback()
def graft() -> None:
    """Graft: transfer learning as a service."""


@app.command()
def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 3000,
    workers: Annotated[
        int | None, typer.Option(help="Worker processes (default: GRAFT_WORKERS).")
    ] = None,
) -> None:
    """Run `bentoml serve service:Graft` with Graft's settings."""
    if workers is not None:
        os.environ["GRAFT_WORKERS"] = str(workers)
    settings = Settings()
    # BentoML reads its worker count from its own config; GRAFT_WORKERS is the one knob users set.
    overrides = {"services": {"Graft": {"workers": settings.workers}}}
    os.environ["BENTOML_CONFIG_OVERRIDES"] = json.dumps(overrides)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    bentoml = os.path.join(os.path.dirname(sys.executable), "bentoml")
    command = [bentoml, "serve", "service:Graft", "--host", host, "--port", str(port)]
    os.execv(bentoml, command)


def _key_store() -> KeyStore:
    from service.auth import KeyStore
    from service.database import create_registry_engine, upgrade_schema

    engine = create_registry_engine(Settings().registry_url)
    upgrade_schema(engine)
    return KeyStore(engine)


@keys_app.command("create")
def keys_create(
    tenant: Annotated[str, typer.Option(help="The tenant the key acts for.")],
    as_json: JsonFlag = False,
) -> None:
    """Create a key for TENANT; it is printed once and stored only as a hash."""
    import re

    from service.schemas import NAME_PATTERN

    if not re.match(NAME_PATTERN, tenant):
        raise typer.BadParameter("1 to 64 of letters, digits, '-', '_', '.'", param_hint="--tenant")
    issued = _key_store().create(tenant)
    if as_json:
        print(
            json.dumps(
                {
                    "tenant": issued.tenant,
                    "key": issued.key,
                    "prefix": issued.prefix,
                    "created": issued.created.isoformat(),
                }
            )
        )
        return
    console.print(f"tenant  {issued.tenant}\nprefix  {issued.prefix}\nkey     {issued.key}")
    console.print("[dim]Keep the key now: it cannot be shown again.[/dim]")


@keys_app.command("list")
def keys_list(
    tenant: Annotated[str | None, typer.Option(help="Only this tenant's keys.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """List keys by prefix (never the keys themselves)."""
    found = _key_store().list(tenant)
    if as_json:
        print(
            json.dumps(
                [
                    {
                        "tenant": k.tenant,
                        "prefix": k.prefix,
                        "created": k.created.isoformat(),
                        "revoked": k.revoked.isoformat() if k.revoked else None,
                    }
                    for k in found
                ]
            )
        )
        return
    table = Table("prefix", "tenant", "created", "revoked")
    for key in found:
        table.add_row(
            key.prefix,
            key.tenant,
            f"{key.created:%Y-%m-%d %H:%M}",
            f"{key.revoked:%Y-%m-%d %H:%M}" if key.revoked else "",
        )
    console.print(table)


@keys_app.command("revoke")
def keys_revoke(prefix: Annotated[str, typer.Argument(help="The key's prefix.")]) -> None:
    """Revoke the key with PREFIX; requests with it answer 401 from then on."""
    from service.errors import KeyNotFound

    try:
        revoked = _key_store().revoke(prefix)
    except KeyNotFound as exc:
        console.print(cli_render.plain(exc.message, style="red"))
        raise typer.Exit(1) from None
    console.print(f"revoked {revoked.prefix} ({revoked.tenant})")


# train, predict, evaluate, heads, jobs: the commands that talk to a running server.
cli_remote.register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()
