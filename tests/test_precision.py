"""train.precision "auto": measured once per machine, cached, and bf16 kept only where it pays."""

import json
import warnings

import pytest

from umtune.trainable import precision


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("UMTUNE_CACHE", str(tmp_path))
    return tmp_path / "precision.json"


def test_auto_is_measured_once_per_machine_then_read_from_the_cache(cache):
    """The first "auto" times the probe in both precisions and caches fp32's time over bf16's;
    bf16 is chosen exactly when it is faster; the next call reads the cache."""
    choice = precision.resolve("auto")
    assert choice.speedup > 0 and (choice.precision == "bf16") == (choice.speedup > 1.05)
    assert f"{choice.speedup:.2f}x" in choice.reason
    assert list(json.loads(cache.read_text()).values()) == [choice.speedup]
    cache.write_text(json.dumps({k: 0.05 for k in json.loads(cache.read_text())}))
    assert precision.resolve("auto") == precision.Choice(
        "fp32", 0.05, "bf16 measured 0.05x fp32's speed on this CPU")


def test_explicit_bf16_where_it_is_emulated_warns_with_the_ratio_and_fp32_is_never_measured(
        cache):
    precision.resolve("auto")
    cache.write_text(json.dumps({k: 0.06 for k in json.loads(cache.read_text())}))
    with pytest.warns(UserWarning, match=r"bf16 runs at 0\.06x fp32's speed"):
        assert precision.resolve("bf16").precision == "bf16"
    cache.unlink()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert precision.resolve("fp32") == precision.Choice("fp32", None, "as configured")
    assert not cache.exists()


def test_an_unreadable_or_unwritable_cache_only_costs_a_measurement(cache):
    cache.write_text("{not json")
    assert precision.resolve("auto").speedup > 0
    cache.unlink()
    cache.mkdir()  # a folder where the file should be: cannot be written
    assert precision.resolve("auto").speedup > 0
