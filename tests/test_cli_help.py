"""`calmops --help` and every subcommand's help read as plain text: no reST markup from docstrings."""

import argparse
import re

from calmops_dagster.interfaces.cli import build_parser

MARKUP = re.compile(r"``|:(func|class|mod|data|meth|attr):`")


def all_help_texts() -> dict[str, str]:
    parser = build_parser()
    texts = {"calmops": parser.format_help()}
    for action in parser._actions:  # argparse exposes subparsers only through this attribute
        if isinstance(action, argparse._SubParsersAction):
            texts.update({f"calmops {name}": sub.format_help() for name, sub in action.choices.items()})
    return texts


def test_every_help_text_is_plain():
    texts = all_help_texts()
    assert len(texts) > 10 and "calmops run" in texts
    marked = {name: MARKUP.findall(text) for name, text in texts.items() if MARKUP.search(text)}
    assert not marked
