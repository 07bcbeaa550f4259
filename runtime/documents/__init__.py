"""Live documents' storage, shared by the edge (app/documents) and the documents worker:
all their SQL (``store``) and a document as stored now, snapshot plus tail (``tail``)."""
