"""hierloc: hierarchical visual localization (global retrieval, then local matching and PnP)."""

from .utils.threads import limit_blas_spinning

# Before numpy loads OpenBLAS (see limit_blas_spinning): its spinning threads doubled the CNN's time per query.
limit_blas_spinning()

__version__ = "0.1.0"
