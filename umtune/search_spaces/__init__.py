"""Named search spaces: which hyperparameters a sweep varies, and their ranges."""
