"""The command-line front ends sit above the library: no module outside ``audio_vqvae/commands/`` imports them."""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "audio_vqvae"
COMMANDS = "audio_vqvae.commands"


def imported_modules(tree: ast.AST, package: str) -> list[str]:
    """Every module an ``import`` or ``from ... import`` names, at the top or inside a function; relative
    imports are resolved against ``package``, the dotted package of the module parsed."""
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.split(".")[:len(package.split(".")) - node.level + 1] if node.level else []
            module = ".".join(base + ([node.module] if node.module else []))
            names.append(module)
            names += [f"{module}.{alias.name}" for alias in node.names]  # from audio_vqvae import commands
    return names


def is_commands(name: str) -> bool:
    return name == COMMANDS or name.startswith(COMMANDS + ".")


def test_the_library_never_imports_the_commands():
    offenders = []
    for path in sorted(PACKAGE.rglob("*.py")):
        relative = path.relative_to(PACKAGE.parent)
        if relative.parts[1] == "commands":
            continue
        package = ".".join(relative.parts[:-1])
        names = imported_modules(ast.parse(path.read_text(), str(path)), package)
        offenders += [f"{relative}: imports {name}" for name in names if is_commands(name)]
    assert not offenders, "the library imports the command line:\n" + "\n".join(offenders)


def test_the_check_sees_every_form_of_import():
    forms = ["import audio_vqvae.commands.main", "from audio_vqvae.commands.bench import run_benchmark",
             "from audio_vqvae import commands", "def f():\n    from audio_vqvae.commands import data",
             "from ..commands import main", "from .. import commands"]
    for source in forms:
        assert any(map(is_commands, imported_modules(ast.parse(source), "audio_vqvae.data"))), source
    for source in ["import audio_vqvae.config", "from .corpora import scan_corpus", "from audio_vqvae import cli"]:
        assert not any(map(is_commands, imported_modules(ast.parse(source), "audio_vqvae.data"))), source
