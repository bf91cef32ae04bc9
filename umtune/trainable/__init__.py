"""The network and how it learns and generates.

model.py (nn.Modules), augment.py (pitch-shift augmentation), content.py (the content head's
targets and loss), loop.py (the training loop, plain or as a Ray Train worker), checkpoint.py,
generate.py (cached generation, `load_translator`), translate.py (files in, translations out),
run_folder.py (the one shape of a run's folder, whoever trains it), ray_train.py (the Ray
Train adapter) and runs.py (`umtune train`: a plain run or a Ray one).
Import the modules directly: importing this package loads neither torch nor Ray. Nothing here
imports the sweep side or analysis: they hand the trainer callbacks.
"""
