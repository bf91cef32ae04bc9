"""The network and how it learns and generates.

model.py (nn.Modules), augment.py (pitch-shift augmentation), loop.py (the training loop, plain
or as a Ray Train worker), checkpoint.py, generate.py (cached generation, `load_translator`),
translate.py (files in, translations out) and ray_train.py (the Ray Train adapter). Import the
modules directly: importing this package loads neither torch nor Ray.
"""


def __getattr__(name: str):
    """`umtune.trainable.tune_trial`, the Tune trainable, and `TRIAL_RESOURCES`, what its
    driver asks for, imported (with Ray) on first use."""
    if name in ("tune_trial", "TRIAL_RESOURCES"):
        from umtune.trainable import ray_train

        return getattr(ray_train, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
