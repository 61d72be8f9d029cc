"""Global-descriptor index of map keyframes: storage (protobuf and HDF5), PCA and nearest-neighbour retrieval."""

from hierloc.index.approximate import HNSWSearch, IVFPQSearch, choose_backend
from hierloc.index.descriptor_index import DescriptorIndex
from hierloc.index.errors import IndexCompatibilityError, IndexFormatError, IndexValidationError
from hierloc.index.io import convert_index, detect_format, format_for_path, load_index, save_index
from hierloc.index.native_format import IndexCatalog, read_native_catalog, read_native_index, write_native_index
from hierloc.index.pca import PCA, l2_normalize
from hierloc.index.proto_format import decode_proto_index, encode_proto_index, read_proto_index, write_proto_index
from hierloc.index.retriever import Retrieval, Retriever
from hierloc.index.search import FlatSearch, SearchBackend, available_backends, make_backend, register_backend
from hierloc.index.stored_search import load_retriever, load_stored_search, save_index_with_search
from hierloc.utils.ids import id_to_pair, is_valid_id, normalize_id, pair_to_id, stable_id

__all__ = [
    "DescriptorIndex",
    "FlatSearch",
    "HNSWSearch",
    "IVFPQSearch",
    "IndexCatalog",
    "IndexCompatibilityError",
    "IndexFormatError",
    "IndexValidationError",
    "PCA",
    "Retrieval",
    "Retriever",
    "SearchBackend",
    "available_backends",
    "choose_backend",
    "convert_index",
    "decode_proto_index",
    "detect_format",
    "encode_proto_index",
    "format_for_path",
    "id_to_pair",
    "is_valid_id",
    "l2_normalize",
    "load_index",
    "load_retriever",
    "load_stored_search",
    "make_backend",
    "normalize_id",
    "pair_to_id",
    "read_native_catalog",
    "read_native_index",
    "read_proto_index",
    "register_backend",
    "save_index",
    "save_index_with_search",
    "stable_id",
    "write_native_index",
    "write_proto_index",
]
