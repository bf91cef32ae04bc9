"""YAML written by hand, read strictly: `yaml.safe_load` that refuses a key given twice.

PyYAML keeps the last of two equal keys without a word, so a search space or a cluster file
that names a field twice would run with a value its author may not have meant. Search spaces
(search_spaces/spec.py), cluster files (cluster/check.py) and `--set` values (config.py) are
read with `load`, which also bounds what anchors and aliases may expand to.
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


# Values a document may expand to through its aliases: a few kilobytes of anchors and aliases
# can otherwise stand for billions of values ("billion laughs"), which any code walking the
# result (a schema check, a comparison, JSON) would spend hours or all memory on.
MAX_VALUES = 100_000


def expanded_size(node: yaml.Node, sizes: dict[int, int] | None = None) -> int:
    """How many values the node stands for with every alias expanded, counted once per node."""
    sizes = {} if sizes is None else sizes
    if id(node) not in sizes:
        sizes[id(node)] = 0  # a recursive alias counts as one: safe_load builds it as a cycle
        children = [] if isinstance(node, yaml.ScalarNode) else [
            child for item in node.value for child in (item if isinstance(item, tuple) else
                                                      (item,))]
        sizes[id(node)] = 1 + sum(expanded_size(c, sizes) for c in children)
    return sizes[id(node)]


def load(text: str, source: str):
    """The document in `text`, as `yaml.safe_load` reads it, or a one-line ValueError starting
    with `source` (a file name) that says where and what is wrong: bad syntax, a tag that
    safe_load refuses, a key given twice in one mapping (naming both lines), or aliases that
    expand it beyond MAX_VALUES values."""
    try:
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            if node is not None and (size := expanded_size(node)) > MAX_VALUES:
                raise ValueError(f"{source}: its anchors and aliases expand it to {size:,} "
                                 f"values; expected at most {MAX_VALUES:,} (write the values "
                                 "out)")
            return None if node is None else loader.construct_document(node)
        finally:
            loader.dispose()
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ValueError(f"{source}: not valid YAML: {where}{problem}") from None
