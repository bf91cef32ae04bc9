"""YAML written by hand, read strictly: `yaml.safe_load` that refuses a key given twice.

PyYAML keeps the last of two equal keys without a word, so a search space or a cluster file
that names a field twice would run with a value its author may not have meant. Search spaces
(search_spaces/spec.py) and cluster files (cluster/check.py) are read with `load`.
"""

from __future__ import annotations

import yaml


class _Loader(yaml.SafeLoader):
    """SafeLoader whose mappings refuse duplicate keys (merge keys `<<` may still override)."""


def _mapping(loader: _Loader, node: yaml.MappingNode):
    seen: dict = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            first = seen.setdefault(key, key_node.start_mark.line + 1)
        except TypeError:  # an unhashable key: SafeLoader refuses it with its own message
            continue
        if first != key_node.start_mark.line + 1:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark,
                f"found the key {key!r} twice (first on line {first}); expected each key once",
                key_node.start_mark)
    yield from yaml.SafeLoader.construct_yaml_map(loader, node)


_Loader.add_constructor("tag:yaml.org,2002:map", _mapping)


def load(text: str, source: str):
    """The document in `text`, as `yaml.safe_load` reads it, or a one-line ValueError starting
    with `source` (a file name) that says where and what is wrong: bad syntax, a tag that
    safe_load refuses, or a key given twice in one mapping (naming both lines)."""
    try:
        return yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{source}: not valid YAML: {where}{problem}") from None
