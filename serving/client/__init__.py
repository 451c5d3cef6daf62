"""The Python client of ``simclr.v1.ImageSearch`` and the client-side commands.

Needs only grpc and the generated stubs: nothing of the server side.

    from simclr_search.serving.client import Client
"""

from simclr_search.serving.client.grpc_client import AsyncClient, Client, EmbedStream, SearchResult

__all__ = ["AsyncClient", "Client", "EmbedStream", "SearchResult"]
