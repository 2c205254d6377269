"""The README's node tables state each input's default and tooltip as the nodes declare them."""

from __future__ import annotations

import re

from conftest import REPO

ROW = re.compile(r"^\| `(?P<name>\w+)`(?: \(optional\))? \| (?P<type>[^|]+) \| (?P<default>[^|]*) \| (?P<what>.*) \|$")


def readme_tables() -> dict[str, dict[str, dict]]:
    """{node id: {input name: {"default": text, "what": text}}} from the README's node sections."""
    tables: dict[str, dict[str, dict]] = {}
    node = None
    for line in (REPO / "README.md").read_text().splitlines():
        head = re.match(r"^#### .*\(`(T2L_\w+)`\)$", line)
        if head:
            node = head.group(1)
            tables[node] = {}
            continue
        row = ROW.match(line)
        if node and row and row.group("type").strip() not in ("type",):
            tables[node].setdefault(row.group("name"), {"default": row.group("default").strip(),
                                                         "what": row.group("what").strip()})
    return tables


def shown(value) -> str:
    return repr(value) if isinstance(value, str) and value else ("" if value == "" else str(value))


def test_readme_node_tables_agree_with_the_nodes(pack):
    tables = readme_tables()
    assert tables, "no node tables found in README.md"
    for node_id, cls in pack.NODE_CLASS_MAPPINGS.items():
        assert node_id in tables, f"README.md has no section for {node_id}"
        table = tables[node_id]
        inputs = {**cls.INPUT_TYPES()["required"], **cls.INPUT_TYPES().get("optional", {})}
        for name, spec in inputs.items():
            options = spec[1] if len(spec) > 1 else {}
            assert name in table, f"README.md: {node_id} lacks the input {name}"
            if "default" in options and not isinstance(spec[0], list):
                assert table[name]["default"] == shown(options["default"]), (node_id, name)
            if "tooltip" in options:
                assert table[name]["what"] == options["tooltip"], (node_id, name)
