"""``dfstream monitor-token`` (the web dashboard's access token) and ``dfstream keys`` (CurveZMQ
keys for stages on other hosts): the secrets a monitor or a run across hosts needs."""
from __future__ import annotations

import click

from dfstream.cli.common import one_line_error


@click.command("monitor-token")
def monitor_token_command():
    """Print a new random token for the monitor's web server, and the hash to put in its config.

    \b
    The config keeps only the hash (web.token_hash); give the token to the people and the
    Prometheus scraper that need it (Authorization: Bearer <token>, or the login form)."""
    from monitor.auth import hash_token, new_token

    token = new_token()
    click.echo(f"token: {token}")
    click.echo(f"token_hash: {hash_token(token)}")


@click.command("keys")
@click.argument("directory", metavar="DIR")
def keys_command(directory):
    """Write new CurveZMQ server and client keys into DIR (files 0600) for a run across hosts.

    \b
    Copy DIR to every host of the run and name it in the plan: "curve_keys": "DIR" (relative to
    the plan's folder, or absolute). Keys already in DIR are never overwritten."""
    from pipeline.transport import write_keys

    try:
        written = write_keys(directory)
    except OSError as exc:
        raise one_line_error(exc) from None
    click.echo(f"wrote {len(written)} key files to {directory}: {', '.join(sorted(p.name for p in written))}")
