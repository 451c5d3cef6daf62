from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class Image(_message.Message):
    __slots__ = ("data",)
    DATA_FIELD_NUMBER: _ClassVar[int]
    data: bytes
    def __init__(self, data: _Optional[bytes] = ...) -> None: ...

class Embedding(_message.Message):
    __slots__ = ("values",)
    VALUES_FIELD_NUMBER: _ClassVar[int]
    values: _containers.RepeatedScalarFieldContainer[float]
    def __init__(self, values: _Optional[_Iterable[float]] = ...) -> None: ...

class EmbedRequest(_message.Message):
    __slots__ = ("images",)
    IMAGES_FIELD_NUMBER: _ClassVar[int]
    images: _containers.RepeatedCompositeFieldContainer[Image]
    def __init__(self, images: _Optional[_Iterable[_Union[Image, _Mapping]]] = ...) -> None: ...

class EmbedResponse(_message.Message):
    __slots__ = ("embeddings", "model")
    EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    embeddings: _containers.RepeatedCompositeFieldContainer[Embedding]
    model: str
    def __init__(self, embeddings: _Optional[_Iterable[_Union[Embedding, _Mapping]]] = ..., model: _Optional[str] = ...) -> None: ...

class DenoiseRequest(_message.Message):
    __slots__ = ("image", "noise_sigma")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    NOISE_SIGMA_FIELD_NUMBER: _ClassVar[int]
    image: Image
    noise_sigma: float
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., noise_sigma: _Optional[float] = ...) -> None: ...

class DenoiseResponse(_message.Message):
    __slots__ = ("png",)
    PNG_FIELD_NUMBER: _ClassVar[int]
    png: bytes
    def __init__(self, png: _Optional[bytes] = ...) -> None: ...

class ReconstructRequest(_message.Message):
    __slots__ = ("image", "embedding")
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    image: Image
    embedding: Embedding
    def __init__(self, image: _Optional[_Union[Image, _Mapping]] = ..., embedding: _Optional[_Union[Embedding, _Mapping]] = ...) -> None: ...

class ReconstructResponse(_message.Message):
    __slots__ = ("png",)
    PNG_FIELD_NUMBER: _ClassVar[int]
    png: bytes
    def __init__(self, png: _Optional[bytes] = ...) -> None: ...

class MetadataFilter(_message.Message):
    __slots__ = ("field", "string_value", "int_value", "double_value", "bool_value")
    FIELD_FIELD_NUMBER: _ClassVar[int]
    STRING_VALUE_FIELD_NUMBER: _ClassVar[int]
    INT_VALUE_FIELD_NUMBER: _ClassVar[int]
    DOUBLE_VALUE_FIELD_NUMBER: _ClassVar[int]
    BOOL_VALUE_FIELD_NUMBER: _ClassVar[int]
    field: str
    string_value: str
    int_value: int
    double_value: float
    bool_value: bool
    def __init__(self, field: _Optional[str] = ..., string_value: _Optional[str] = ..., int_value: _Optional[int] = ..., double_value: _Optional[float] = ..., bool_value: _Optional[bool] = ...) -> None: ...

class SearchRequest(_message.Message):
    __slots__ = ("collection", "image", "vector", "id", "k", "filter")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    VECTOR_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    K_FIELD_NUMBER: _ClassVar[int]
    FILTER_FIELD_NUMBER: _ClassVar[int]
    collection: str
    image: Image
    vector: Embedding
    id: str
    k: int
    filter: MetadataFilter
    def __init__(self, collection: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., vector: _Optional[_Union[Embedding, _Mapping]] = ..., id: _Optional[str] = ..., k: _Optional[int] = ..., filter: _Optional[_Union[MetadataFilter, _Mapping]] = ...) -> None: ...

class SearchHit(_message.Message):
    __slots__ = ("id", "score", "uri", "metadata_json", "is_copy", "copy_probability")
    ID_FIELD_NUMBER: _ClassVar[int]
    SCORE_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    IS_COPY_FIELD_NUMBER: _ClassVar[int]
    COPY_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    id: str
    score: float
    uri: str
    metadata_json: str
    is_copy: bool
    copy_probability: float
    def __init__(self, id: _Optional[str] = ..., score: _Optional[float] = ..., uri: _Optional[str] = ..., metadata_json: _Optional[str] = ..., is_copy: _Optional[bool] = ..., copy_probability: _Optional[float] = ...) -> None: ...

class SearchResponse(_message.Message):
    __slots__ = ("hits",)
    HITS_FIELD_NUMBER: _ClassVar[int]
    hits: _containers.RepeatedCompositeFieldContainer[SearchHit]
    def __init__(self, hits: _Optional[_Iterable[_Union[SearchHit, _Mapping]]] = ...) -> None: ...

class UpsertItem(_message.Message):
    __slots__ = ("id", "image", "embedding", "uri", "metadata_json")
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    id: str
    image: Image
    embedding: Embedding
    uri: str
    metadata_json: str
    def __init__(self, id: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., embedding: _Optional[_Union[Embedding, _Mapping]] = ..., uri: _Optional[str] = ..., metadata_json: _Optional[str] = ...) -> None: ...

class UpsertRequest(_message.Message):
    __slots__ = ("collection", "items")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    items: _containers.RepeatedCompositeFieldContainer[UpsertItem]
    def __init__(self, collection: _Optional[str] = ..., items: _Optional[_Iterable[_Union[UpsertItem, _Mapping]]] = ...) -> None: ...

class UpsertResponse(_message.Message):
    __slots__ = ("ids",)
    IDS_FIELD_NUMBER: _ClassVar[int]
    ids: _containers.RepeatedScalarFieldContainer[str]
    def __init__(self, ids: _Optional[_Iterable[str]] = ...) -> None: ...

class DeleteRequest(_message.Message):
    __slots__ = ("collection", "ids", "ignore_missing")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    IGNORE_MISSING_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    ignore_missing: bool
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., ignore_missing: _Optional[bool] = ...) -> None: ...

class DeleteResponse(_message.Message):
    __slots__ = ("deleted",)
    DELETED_FIELD_NUMBER: _ClassVar[int]
    deleted: int
    def __init__(self, deleted: _Optional[int] = ...) -> None: ...

class GetRequest(_message.Message):
    __slots__ = ("collection", "ids", "include_embeddings")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    IDS_FIELD_NUMBER: _ClassVar[int]
    INCLUDE_EMBEDDINGS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    ids: _containers.RepeatedScalarFieldContainer[str]
    include_embeddings: bool
    def __init__(self, collection: _Optional[str] = ..., ids: _Optional[_Iterable[str]] = ..., include_embeddings: _Optional[bool] = ...) -> None: ...

class StoredItem(_message.Message):
    __slots__ = ("id", "uri", "content_sha256", "metadata_json", "embedding")
    ID_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_FIELD_NUMBER: _ClassVar[int]
    id: str
    uri: str
    content_sha256: str
    metadata_json: str
    embedding: Embedding
    def __init__(self, id: _Optional[str] = ..., uri: _Optional[str] = ..., content_sha256: _Optional[str] = ..., metadata_json: _Optional[str] = ..., embedding: _Optional[_Union[Embedding, _Mapping]] = ...) -> None: ...

class GetResponse(_message.Message):
    __slots__ = ("items",)
    ITEMS_FIELD_NUMBER: _ClassVar[int]
    items: _containers.RepeatedCompositeFieldContainer[StoredItem]
    def __init__(self, items: _Optional[_Iterable[_Union[StoredItem, _Mapping]]] = ...) -> None: ...

class IndexImagesRequest(_message.Message):
    __slots__ = ("collection", "id", "image", "uri", "metadata_json")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    ID_FIELD_NUMBER: _ClassVar[int]
    IMAGE_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    METADATA_JSON_FIELD_NUMBER: _ClassVar[int]
    collection: str
    id: str
    image: Image
    uri: str
    metadata_json: str
    def __init__(self, collection: _Optional[str] = ..., id: _Optional[str] = ..., image: _Optional[_Union[Image, _Mapping]] = ..., uri: _Optional[str] = ..., metadata_json: _Optional[str] = ...) -> None: ...

class IndexImagesResult(_message.Message):
    __slots__ = ("id", "status", "error")
    class Status(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
        __slots__ = ()
        STATUS_UNSPECIFIED: _ClassVar[IndexImagesResult.Status]
        INDEXED: _ClassVar[IndexImagesResult.Status]
        SKIPPED_DUPLICATE: _ClassVar[IndexImagesResult.Status]
        FAILED: _ClassVar[IndexImagesResult.Status]
    STATUS_UNSPECIFIED: IndexImagesResult.Status
    INDEXED: IndexImagesResult.Status
    SKIPPED_DUPLICATE: IndexImagesResult.Status
    FAILED: IndexImagesResult.Status
    ID_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    id: str
    status: IndexImagesResult.Status
    error: str
    def __init__(self, id: _Optional[str] = ..., status: _Optional[_Union[IndexImagesResult.Status, str]] = ..., error: _Optional[str] = ...) -> None: ...

class GetInfoRequest(_message.Message):
    __slots__ = ()
    def __init__(self) -> None: ...

class CollectionInfo(_message.Message):
    __slots__ = ("name", "count", "index_kind", "metric", "dim")
    NAME_FIELD_NUMBER: _ClassVar[int]
    COUNT_FIELD_NUMBER: _ClassVar[int]
    INDEX_KIND_FIELD_NUMBER: _ClassVar[int]
    METRIC_FIELD_NUMBER: _ClassVar[int]
    DIM_FIELD_NUMBER: _ClassVar[int]
    name: str
    count: int
    index_kind: str
    metric: str
    dim: int
    def __init__(self, name: _Optional[str] = ..., count: _Optional[int] = ..., index_kind: _Optional[str] = ..., metric: _Optional[str] = ..., dim: _Optional[int] = ...) -> None: ...

class GetInfoResponse(_message.Message):
    __slots__ = ("server_version", "manifest_json", "embedding_dim", "embedding_normalized", "collections", "default_collection", "max_batch", "max_k", "max_image_bytes", "max_image_pixels", "providers", "has_denoiser", "has_decoder")
    SERVER_VERSION_FIELD_NUMBER: _ClassVar[int]
    MANIFEST_JSON_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_DIM_FIELD_NUMBER: _ClassVar[int]
    EMBEDDING_NORMALIZED_FIELD_NUMBER: _ClassVar[int]
    COLLECTIONS_FIELD_NUMBER: _ClassVar[int]
    DEFAULT_COLLECTION_FIELD_NUMBER: _ClassVar[int]
    MAX_BATCH_FIELD_NUMBER: _ClassVar[int]
    MAX_K_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_BYTES_FIELD_NUMBER: _ClassVar[int]
    MAX_IMAGE_PIXELS_FIELD_NUMBER: _ClassVar[int]
    PROVIDERS_FIELD_NUMBER: _ClassVar[int]
    HAS_DENOISER_FIELD_NUMBER: _ClassVar[int]
    HAS_DECODER_FIELD_NUMBER: _ClassVar[int]
    server_version: str
    manifest_json: str
    embedding_dim: int
    embedding_normalized: bool
    collections: _containers.RepeatedCompositeFieldContainer[CollectionInfo]
    default_collection: str
    max_batch: int
    max_k: int
    max_image_bytes: int
    max_image_pixels: int
    providers: _containers.RepeatedScalarFieldContainer[str]
    has_denoiser: bool
    has_decoder: bool
    def __init__(self, server_version: _Optional[str] = ..., manifest_json: _Optional[str] = ..., embedding_dim: _Optional[int] = ..., embedding_normalized: _Optional[bool] = ..., collections: _Optional[_Iterable[_Union[CollectionInfo, _Mapping]]] = ..., default_collection: _Optional[str] = ..., max_batch: _Optional[int] = ..., max_k: _Optional[int] = ..., max_image_bytes: _Optional[int] = ..., max_image_pixels: _Optional[int] = ..., providers: _Optional[_Iterable[str]] = ..., has_denoiser: _Optional[bool] = ..., has_decoder: _Optional[bool] = ...) -> None: ...

class FindDuplicatesRequest(_message.Message):
    __slots__ = ("collection", "exact_only", "neighbours")
    COLLECTION_FIELD_NUMBER: _ClassVar[int]
    EXACT_ONLY_FIELD_NUMBER: _ClassVar[int]
    NEIGHBOURS_FIELD_NUMBER: _ClassVar[int]
    collection: str
    exact_only: bool
    neighbours: int
    def __init__(self, collection: _Optional[str] = ..., exact_only: _Optional[bool] = ..., neighbours: _Optional[int] = ...) -> None: ...

class DuplicateMember(_message.Message):
    __slots__ = ("id", "uri", "content_sha256", "copy_probability", "exact", "width", "height", "bytes", "has_exif")
    ID_FIELD_NUMBER: _ClassVar[int]
    URI_FIELD_NUMBER: _ClassVar[int]
    CONTENT_SHA256_FIELD_NUMBER: _ClassVar[int]
    COPY_PROBABILITY_FIELD_NUMBER: _ClassVar[int]
    EXACT_FIELD_NUMBER: _ClassVar[int]
    WIDTH_FIELD_NUMBER: _ClassVar[int]
    HEIGHT_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    HAS_EXIF_FIELD_NUMBER: _ClassVar[int]
    id: str
    uri: str
    content_sha256: str
    copy_probability: float
    exact: bool
    width: int
    height: int
    bytes: int
    has_exif: bool
    def __init__(self, id: _Optional[str] = ..., uri: _Optional[str] = ..., content_sha256: _Optional[str] = ..., copy_probability: _Optional[float] = ..., exact: _Optional[bool] = ..., width: _Optional[int] = ..., height: _Optional[int] = ..., bytes: _Optional[int] = ..., has_exif: _Optional[bool] = ...) -> None: ...

class DuplicateGroup(_message.Message):
    __slots__ = ("keep", "copies", "reason", "threshold")
    KEEP_FIELD_NUMBER: _ClassVar[int]
    COPIES_FIELD_NUMBER: _ClassVar[int]
    REASON_FIELD_NUMBER: _ClassVar[int]
    THRESHOLD_FIELD_NUMBER: _ClassVar[int]
    keep: DuplicateMember
    copies: _containers.RepeatedCompositeFieldContainer[DuplicateMember]
    reason: str
    threshold: float
    def __init__(self, keep: _Optional[_Union[DuplicateMember, _Mapping]] = ..., copies: _Optional[_Iterable[_Union[DuplicateMember, _Mapping]]] = ..., reason: _Optional[str] = ..., threshold: _Optional[float] = ...) -> None: ...
