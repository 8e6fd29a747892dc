"""`lastmeter tokens`: access tokens issued, listed and revoked."""

from typing import Annotated, Optional
from uuid import UUID

import typer
from rich.table import Column, Table

from api.cli.common import console, opened, operator
from api.render import moment

group = typer.Typer(help="Access tokens.", no_args_is_help=True)


@group.command("create")
def tokens_create(
    user: Annotated[str, typer.Option(help="the staff user id")],
    role: Annotated[str, typer.Option(help="case_worker, supervisor, auditor, contractor or admin")],
    org_unit: Annotated[Optional[str], typer.Option(help="scope of a case_worker or supervisor")] = None,
    provider: Annotated[Optional[str], typer.Option(help="the provider of a contractor")] = None,
    personal_data: Annotated[bool, typer.Option(help="let an auditor see personal values")] = False,
) -> None:
    """Creates a token; it is printed once, alone on the last line, and stored only hashed."""
    with opened() as backend:
        secret = backend.lastmeter.issue_token(operator(), user, role, org_unit, provider, personal_data)
    console.print(f"token for {user} ({role}); keep it, it is not shown again:")
    print(secret)


@group.command("list")
def tokens_list() -> None:
    """Every token issued: its id (for revoking), user, role, scope, and whether it is revoked."""
    with opened() as backend:
        tokens = backend.lastmeter.tokens()
    rows = [(str(t.id), t.user, t.role, t.org_unit or t.provider or ("personal data" if t.reads_personal else "-"),
             moment(t.created_on), "yes" if t.revoked else "") for t in tokens]
    if not console.is_terminal:  # piped to grep or awk: whole values, one token a line (a table cut the ids)
        for row in rows:
            print("\t".join(row))
        return
    table = Table(Column("id", no_wrap=True, min_width=36), "user", "role", "scope", "issued", "revoked")
    for row in rows:
        table.add_row(*row)
    console.print(table)


@group.command("revoke")
def tokens_revoke(token_id: UUID) -> None:
    """Revokes a token (by the id `tokens list` shows); the next request with it is refused."""
    with opened() as backend:
        backend.lastmeter.revoke_token(operator(), token_id)
    console.print(f"token {token_id} revoked")
