"""`imgnet label serve | invite | revoke`: the local backend's web app and its invite links."""

from __future__ import annotations

import os
import secrets

import click

from imgnet_build.cli.common import json_option, pass_workspace, print_json
from imgnet_build.workspace import Workspace

__all__ = ["serve_command", "invite_command", "revoke_command"]

DEFAULT_BASE_URL = "http://127.0.0.1:8000"
base_url_option = click.option("--base-url", default=DEFAULT_BASE_URL, show_default=True, envvar="IMGNET_LABEL_URL",
                               help="Where workers reach `imgnet label serve` (IMGNET_LABEL_URL).")


@click.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535), help="Port (0: any free one).")
@click.option("--threads", default=8, show_default=True, type=click.IntRange(1, 256), help="Requests served at once.")
@click.option("--connection-limit", default=1000, show_default=True, type=click.IntRange(10, 100_000),
              help="Connections kept open at once (capped by the open-file limit).")
@click.option("--channel-timeout", default=30, show_default=True, type=click.IntRange(5, 3600),
              help="Seconds a silent or slow connection may stay open.")
@pass_workspace
def serve_command(workspace: Workspace, host: str, port: int, threads: int, connection_limit: int,
                  channel_timeout: int) -> None:
    """Run the labeling web app for invited workers (backend local) until Ctrl-C.

    Workers open the link `imgnet label invite NAME` printed and get the open tasks that
    `imgnet label submit --backend local` issued. The requester's page is /admin, opened
    with IMGNET_ADMIN_TOKEN or the token printed at start. Silent or slow connections are
    closed after --channel-timeout seconds; on the open internet, put a proxy in front.

    Example:

    \b
        imgnet label serve --host 0.0.0.0 --port 8000
    """
    from imgnet_build.labeling.web import ADMIN_TOKEN_ENV, ServerLimits, make_server

    _ = workspace.engine  # refuse a database it cannot serve (newer schema, unreachable) now, not with 503s later
    admin_token = os.environ.get(ADMIN_TOKEN_ENV)  # set but empty: refused by the app
    if admin_token is None:
        admin_token = secrets.token_urlsafe(24)
    limits = ServerLimits(connection_limit=connection_limit, channel_timeout=channel_timeout)
    server = make_server(workspace, host, port, admin_token, threads, limits)
    base = f"http://{host if host not in ('0.0.0.0', '::') else '127.0.0.1'}:{server.effective_port}"
    shown = admin_token if ADMIN_TOKEN_ENV not in os.environ else f"${ADMIN_TOKEN_ENV}"
    click.echo(f"Serving labeling tasks on {base} (Ctrl-C stops)")
    click.echo(f"Requester page: {base}/admin?token={shown}")
    try:
        server.run()
    except KeyboardInterrupt:
        pass
    finally:
        server.close()


@click.command("invite")
@click.argument("name")
@base_url_option
@json_option
@pass_workspace
def invite_command(workspace: Workspace, name: str, base_url: str, as_json: bool) -> None:
    """Print an invite link for worker NAME (a new link replaces their old one).

    The token is shown once and only its hash is kept: pass the link on to the worker.

    Example:

    \b
        imgnet label invite alice --base-url http://labeling.example.org:8000
    """
    from imgnet_build.labeling.invites import invite

    link = invite(workspace, name)
    if as_json:
        print_json({"name": link.name, "url": link.url(base_url), "token": link.token, "renewed": link.renewed})
        return
    note = " (their previous link no longer works)" if link.renewed else ""
    click.echo(f"Invite link for {link.name}{note}:\n{link.url(base_url)}")


@click.command("revoke")
@click.argument("name")
@json_option
@pass_workspace
def revoke_command(workspace: Workspace, name: str, as_json: bool) -> None:
    """Stop worker NAME's invite link and sessions; the votes they gave stay.

    Example:

    \b
        imgnet label revoke alice
    """
    from imgnet_build.labeling.invites import revoke

    name = name.strip()  # as invite strips it
    revoke(workspace, name)
    if as_json:
        print_json({"name": name, "revoked": True})
    else:
        click.echo(f"Revoked {name}'s invite link")
