"""Jobs that run the service core in-process: batch indexing (``simclr index``) and the quickstart."""
