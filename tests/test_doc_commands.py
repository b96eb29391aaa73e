"""Every command that the README and docs/*.md print names a sub-command, options, overrides and repository
files that exist: a renamed flag or a moved script fails here instead of in a reader's terminal."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from audio_vqvae.commands.main import build_parser
from audio_vqvae.config import ExperimentConfig, apply_overrides
from audio_vqvae.training.recipe import build_parser as recipe_parser
from audio_vqvae.training.recipe import qualify_overrides

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Repository paths a command may name; anything under runs/, data/ or a user's folder is the reader's.
REPOSITORY_PREFIXES = ("recipes/", "scripts/", "experiments/", "audio_vqvae/", "tests/")


def command_lines(pattern: str) -> list[tuple[str, str]]:
    """(page, command text) for every code span or code-block line of the pages that matches ``pattern``,
    from the match to the end of the span or line, comments and line continuations dropped."""
    found = []
    for page in PAGES:
        text = page.read_text()
        pieces = re.findall(r"```[a-z]*\n(.*?)```", text, flags=re.S)
        lines = [line for block in pieces for line in block.replace("\\\n", " ").splitlines()]
        lines += re.findall(r"`([^`\n]+)`", re.sub(r"```.*?```", "", text, flags=re.S))
        for line in lines:
            match = re.search(pattern, line)
            if match:
                found.append((page.name, line[match.start():].split(" #")[0].strip()))
    return found


def words(command: str) -> list[str]:
    try:
        return shlex.split(command)
    except ValueError:  # an unbalanced quote in prose: split on spaces
        return command.split()


def options_of(parser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


CLI = build_parser()
SUBCOMMANDS = next(action for action in CLI._actions if action.choices and "prepare" in action.choices).choices


@pytest.mark.parametrize("page,command", command_lines(r"audio-vqvae [a-z][a-z-]*"))
def test_every_audio_vqvae_command_names_a_subcommand_and_its_options(page, command):
    tokens = words(command)
    name = tokens[1]
    assert name in SUBCOMMANDS, f"{page}: `{command}`: no sub-command {name!r}"
    known = options_of(SUBCOMMANDS[name])
    for token in tokens[2:]:
        option = token.split("=")[0]
        if option.startswith("--"):
            assert option in known, f"{page}: `{command}`: {name} has no option {option}"


@pytest.mark.parametrize("page,command", command_lines(r"recipes/[a-z]+/train\.py"))
def test_every_recipe_command_names_a_recipe_its_options_and_valid_overrides(page, command):
    tokens = words(command)
    recipe = ROOT / tokens[0]
    assert recipe.exists(), f"{page}: `{command}`: no recipe {tokens[0]}"
    known = options_of(recipe_parser(recipe.parent.name, recipe.parent))
    overrides = []
    for token in tokens[1:]:
        if token.startswith("--"):
            assert token.split("=")[0] in known, f"{page}: `{command}`: the recipe has no option {token}"
        elif re.fullmatch(r"[a-z_]+(\.[a-z_]+)*=\S+", token) and "<" not in token:
            overrides.append(token)
    apply_overrides(ExperimentConfig(), qualify_overrides(overrides))  # unknown keys or bad types raise


@pytest.mark.parametrize("page,command", command_lines(r"(\.venv/bin/)?python [a-z]"))
def test_every_script_a_command_runs_is_in_the_repository(page, command):
    for token in words(command):
        if token.startswith(REPOSITORY_PREFIXES) and re.search(r"\.(py|sh|yaml)$", token):
            assert (ROOT / token).exists(), f"{page}: `{command}`: no file {token}"


def test_the_pages_print_commands():
    assert len(command_lines(r"audio-vqvae [a-z][a-z-]*")) > 20
    assert len(command_lines(r"recipes/[a-z]+/train\.py")) > 3
