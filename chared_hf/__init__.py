"""chared_hf: character-wise (byte-wise) ensembles of causal LMs with different tokenizers.

CharED (Gu et al., arXiv 2407.11009) as a Hugging Face Transformers model. Scoring and EM
weights live in ``chared_hf.tools.scoring``, HumanEval/GSM8K in ``chared_hf.tools.tasks``, the
command line in ``chared_hf.tools.cli``.

Importing the package registers the ensemble with Transformers' Auto classes (so that they
load a saved ensemble with this installed code, never the folder's own module), which imports
torch and Transformers. The one exception is the ``chared`` command itself: there the names
below load when first used, so that ``chared --help`` answers without those imports (the
command imports them once it runs, and registration happens then).
"""

import sys
from pathlib import Path

__all__ = ["Attribution", "ByteTokenizer", "CharEDConfig", "CharEDModel", "EnsembleCache",
           "TokenBytes", "attribute", "load_demo", "plot_attribution"]
__version__ = "0.1.0"


def _load() -> None:
    """Import the public names (and, through ``modeling``, register the Auto classes)."""
    from .configuration import CharEDConfig
    from .decoding.cache import EnsembleCache
    from .demo import load_demo
    from .members.token_bytes import TokenBytes
    from .modeling import CharEDModel
    from .tokenization import ByteTokenizer
    from .tools.attribution import Attribution, attribute
    from .tools.plotting import plot_attribution

    globals().update(Attribution=Attribution, ByteTokenizer=ByteTokenizer,
                     CharEDConfig=CharEDConfig, CharEDModel=CharEDModel,
                     EnsembleCache=EnsembleCache, TokenBytes=TokenBytes, attribute=attribute,
                     load_demo=load_demo, plot_attribution=plot_attribution)


def __getattr__(name: str):
    """The public names, loaded on first use (only reached under the ``chared`` command)."""
    if name not in __all__:
        raise AttributeError(f"module 'chared_hf' has no attribute {name!r}")
    _load()
    return globals()[name]


# The console script `chared` is the program (`__main__`) when it imports this package.
if Path(getattr(sys.modules.get("__main__"), "__file__", None) or "").name != "chared":
    _load()
