"""Global describers: one contract (`Describer`), one factory (`make_describer`), recorded in artifacts.

    from hierloc.describers import make_describer
    describer = make_describer("mobilenetvlad")            # or "netvlad=netvlad.pth", "model.onnx",
    descriptor = describer.describe(image)                 # "densevlad=vocab.npz", "index.h5", "auto"
"""

from .base import (
                   IDENTITY_PREPROCESSING,
                   NETWORK_PREPROCESSING,
                   Describer,
                   DescriberError,
                   DescriberIdentity,
                   DescriberMismatchError,
                   Preprocessing,
)
from .factory import (
                   AUTO,
                   adapt_to_images,
                   adaptation_loader,
                   default_describer,
                   is_describer_spelling,
                   make_describer,
                   network_describer,
                   trained_weights_installed,
)
from .implementations import DenseVLADDescriber, ExportedDescriber, NetworkDescriber, TensorDescriber
from .stored import (
                   METADATA_KEY,
                   describer_for_artifact,
                   describer_record,
                   identity_of_record,
                   is_describer_artifact,
                   load_artifact_describer,
                   load_recorded_describer,
)

__all__ = [
    "AUTO", "IDENTITY_PREPROCESSING", "METADATA_KEY", "NETWORK_PREPROCESSING", "DenseVLADDescriber", "Describer",
    "DescriberError", "DescriberIdentity", "DescriberMismatchError", "ExportedDescriber", "NetworkDescriber",
    "Preprocessing", "TensorDescriber", "adapt_to_images", "adaptation_loader", "default_describer",
    "describer_for_artifact",
    "describer_record", "identity_of_record", "is_describer_artifact", "is_describer_spelling",
    "load_artifact_describer", "load_recorded_describer", "make_describer", "network_describer",
    "trained_weights_installed",
]
