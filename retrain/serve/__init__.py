"""`retrain serve`: a trained model behind an HTTP API (FastAPI and uvicorn, the optional
extra `serve`), with dynamic batching (batcher.py), bounded uploads (uploads.py), the
routes (app.py), the page at / (page.html) and the server's life (server.py)."""
