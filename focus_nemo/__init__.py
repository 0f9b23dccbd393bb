"""focus-nemo: FOCUS context compression for Evo-2 DNA language models."""

import warnings

__version__ = "0.1.0"

# `import torch` on a machine where the deprecated `pynvml` package is installed (NeMo's dependencies bring
# it) prints a FutureWarning before anything else; nothing a user of this package can act on. Only that
# warning is hidden, and only when torch.cuda is what imports pynvml. Importing focus_nemo before torch
# (as every recipe does) installs the filter in time. (The Warning category, not FutureWarning: NeMo's
# warning capture drops every warning of a category that has an "ignore" filter.)
warnings.filterwarnings("ignore", message=r"The pynvml package is deprecated", category=Warning,
                        module=r"torch\.cuda")
