"""Real audio in: the built-in Bach dataset, any user's folders, and the dataset on disk.

- `render_chorales` (what to render: `ChoraleOptions`): Bach from music21's corpus, rendered
  per instrument with FluidSynth (chorales.py, midi.py, render.py, instruments.py).
- `import_folders`: a folder of per-domain audio folders (importer.py, audio_io.py).
- `import_musicnet`: MusicNet, one domain per ensemble and composer (musicnet.py).
- `Dataset`: a dataset directory opened for reading: files, whole audio, seeded sharded random
  segments (dataset.py); written all-or-nothing by writer.py.
Every bad input raises `DatasetError`.
"""

from umtune.data.chorales import ChoraleOptions, render_chorales
from umtune.data.dataset import FORMAT_VERSION, SPLITS, Dataset, FileEntry
from umtune.data.errors import DatasetError
from umtune.data.importer import import_folders
from umtune.data.instruments import INSTRUMENTS, UNSEEN_DOMAIN
from umtune.data.musicnet import import_musicnet

__all__ = ["FORMAT_VERSION", "INSTRUMENTS", "SPLITS", "UNSEEN_DOMAIN", "ChoraleOptions", "Dataset",
           "DatasetError", "FileEntry", "import_folders", "import_musicnet", "render_chorales"]
