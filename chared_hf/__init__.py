"""chared_hf: character-wise (byte-wise) ensembles of causal LMs with different tokenizers.

CharED (Gu et al., arXiv 2407.11009) as a Hugging Face Transformers model. Scoring and EM
weights live in ``chared_hf.scoring``, HumanEval/GSM8K in ``chared_hf.tasks``, the command line
in ``chared_hf.cli``.
"""

from .attribution import Attribution, attribute
from .configuration import CharEDConfig
from .demo import load_demo
from .modeling import CharEDModel
from .plotting import plot_attribution
from .state import EnsembleCache
from .token_bytes import TokenBytes
from .tokenization import ByteTokenizer

__all__ = ["Attribution", "ByteTokenizer", "CharEDConfig", "CharEDModel", "EnsembleCache",
           "TokenBytes", "attribute", "load_demo", "plot_attribution"]
__version__ = "0.1.0"
