"""The compiled generation step: built once per cache, a failed build is reported by name and
generation falls back to PyTorch's step (generate.py's tests hold both steps to the
teacher-forced pass)."""

import pytest
import torch
from test_model import TINY, _model

from umtune.trainable import fused
from umtune.trainable.generate import generate
from umtune.trainable.native import KernelUnavailable, find_compiler

POOL = TINY.encoder.pool
# `make setup` installs gcc, so CI always runs these; a machine without any C compiler (a bare
# GPU box under `make gpu-check`) skips them, and generation there uses PyTorch's step.
needs_compiler = pytest.mark.skipif(find_compiler() is None,
                                    reason="no C compiler here to build the fused step")
FUSED = pytest.param("fused", marks=needs_compiler)


@pytest.fixture
def fresh_kernel(tmp_path, monkeypatch):
    """An empty kernel cache and no kernel loaded in this process (restored after)."""
    monkeypatch.setenv("UMTUNE_CACHE", str(tmp_path))
    fused._kernel_or_reason.cache_clear()
    yield tmp_path
    fused._kernel_or_reason.cache_clear()


@needs_compiler
def test_the_library_is_built_once_into_the_cache_and_then_reused(fresh_kernel):
    first = fused.build()
    built = first.stat().st_mtime_ns
    assert first.parent == fresh_kernel / "kernels"
    assert fused.build() == first and first.stat().st_mtime_ns == built
    assert [p.name for p in first.parent.iterdir()] == [first.name]  # nothing half-written
    assert fused.fused_available() is None


def test_a_failing_compiler_is_named_and_auto_falls_back_to_the_torch_step(fresh_kernel,
                                                                           monkeypatch):
    monkeypatch.setenv("CC", "false")
    reason = fused.fused_available()
    assert reason is not None and "false" in reason and "failed" in reason
    assert not list(fresh_kernel.rglob("*"))[1:]  # only the empty kernels folder
    dec, z = _model().eval().decoders["a"], torch.randn(2, 4, 3)
    with pytest.raises(KernelUnavailable, match="failed"):
        generate(dec, z, POOL, backend="fused")
    assert torch.equal(generate(dec, z, POOL, seed=3), generate(dec, z, POOL, seed=3,
                                                               backend="torch"))


@needs_compiler
def test_codes_of_the_wrong_shape_or_type_are_refused():
    from umtune.trainable.generate import DecoderCache, DecoderStack

    stack = DecoderStack([_model().eval().decoders["a"]])
    z = torch.randn(1, 2, 4, 3)
    steps = fused.FusedSteps(stack, DecoderCache(stack, 2), stack.condition(z), POOL, 3 * POOL)
    for bad in (torch.zeros(1, 2, 3 * POOL, dtype=torch.int32), torch.zeros(1, 3, 3 * POOL,
                                                                             dtype=torch.long)):
        with pytest.raises(ValueError, match="codes: expected a contiguous int64"):
            steps.run(bad, 0, 1)


@needs_compiler
def test_loading_the_library_leaves_the_process_s_denormals_alone():
    """Linked with -ffast-math in one command, the library would set flush-to-zero for the whole
    process on load (crtfastmath.o): torch and numpy would then turn 1e-39 into 0."""
    fused.load_kernel()
    assert (torch.tensor([1e-39]) * 1.0).item() > 0
