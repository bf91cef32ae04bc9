"""A pytest plugin for machines without Ray, loaded by `gpu_check.py` there (`-p
skip_without_ray`): a test or test module that imports Ray is skipped, saying so, instead of
failing, and every other test runs as usual. Which tests need Ray is found by running them, so
no list of them is kept here to go stale.
"""

from __future__ import annotations

import sys

import pytest


class _NoRay:
    """A meta-path finder that turns `import ray` into a skip of whatever imported it."""

    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise pytest.skip.Exception("needs Ray, which is not installed here",
                                        allow_module_level=True)
        return None


def pytest_configure(config) -> None:
    sys.meta_path.insert(0, _NoRay())
