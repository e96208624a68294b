"""chared_hf: character-wise (byte-wise) ensembles of causal LMs with different tokenizers.

CharED (Gu et al., arXiv 2407.11009) as a Hugging Face Transformers model.
"""

from .configuration import CharEDConfig
from .modeling import CharEDModel
from .state import EnsembleCache
from .token_bytes import TokenBytes
from .tokenization import ByteTokenizer

__all__ = ["ByteTokenizer", "CharEDConfig", "CharEDModel", "EnsembleCache", "TokenBytes"]
__version__ = "0.1.0"
