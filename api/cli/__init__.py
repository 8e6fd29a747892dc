"""The `lastmeter` command line: one module per group of commands."""

import os

import typer

from api.cli import audit, imports, serving, tokens, views

cli = typer.Typer(help="lastmeter: need-to-service cases for the disability-service network.", no_args_is_help=True)
for command in (serving.serve, serving.demo, serving.projector):
    cli.command()(command)
for group, name in ((tokens.group, "tokens"), (audit.group, "audit"), (imports.orgs_group, "orgs"),
                    (views.group, "projections"), (imports.import_group, "import")):
    cli.add_typer(group, name=name)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    cli()
