"""The network and how it learns and generates.

model.py (nn.Modules), augment.py (pitch-shift augmentation), loop.py (the training loop, plain
or as a Ray Train worker), checkpoint.py, generate.py (cached generation, `load_translator`),
translate.py (files in, translations out) and ray_train.py (the Ray Train adapter). Import the
modules directly: importing this package loads neither torch nor Ray.
"""
