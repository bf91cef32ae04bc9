"""The network and how it learns and generates.

model.py (nn.Modules), augment.py (pitch-shift augmentation), loop.py (the training loop, plain
or as a Ray Train worker), checkpoint.py, generate.py (cached generation, `load_translator`),
translate.py (files in, translations out) and ray_train.py (the Ray Train adapter). Import the
modules directly: importing this package loads neither torch nor Ray.
"""


def __getattr__(name: str):
    """`umtune.trainable.tune_trial`, the Tune trainable, imported (with Ray) on first use."""
    if name == "tune_trial":
        from umtune.trainable.ray_train import tune_trial

        return tune_trial
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
