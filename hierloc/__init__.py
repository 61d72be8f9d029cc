"""hierloc: hierarchical visual localization (global retrieval, then local matching and PnP)."""

__version__ = "0.1.0"
