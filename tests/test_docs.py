"""Documentation that is generated from the code stays in step with it."""

from __future__ import annotations

from pathlib import Path

from config.reference import BEGIN, END, markdown_reference

ROOT = Path(__file__).resolve().parent.parent


def test_operations_guide_embeds_the_current_config_reference() -> None:
    text = (ROOT / "docs" / "operations.md").read_text("utf-8")
    start = text.index(BEGIN) + len(BEGIN)
    embedded = text[start : text.index(END)].strip()
    assert embedded == markdown_reference(), "run: python -m config.reference"


def test_every_setting_is_in_the_example_file() -> None:
    example = (ROOT / "config" / "pbxjournal.example.toml").read_text("utf-8")
    for line in markdown_reference().splitlines()[2:]:
        key = line.split("`")[1]
        leaf = key.rsplit(".", 1)[-1]
        if "<" in key or "[]" in key:
            continue
        assert leaf in example, key
