"""Client SDKs built from this repository's schemas (``sdk/js``: ``@wedsync/client``)."""
