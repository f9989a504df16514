"""The ``graft`` command line: serve the API."""

from __future__ import annotations

import json
import os
import sys
from typing import Annotated

import typer

from service.settings import Settings

app = typer.Typer(help="Graft: transfer learning as a service.", no_args_is_help=True)


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


def main() -> None:
    app()


if __name__ == "__main__":
    main()
