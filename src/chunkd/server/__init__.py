"""Running chunkd under an ASGI server: chunkd's own HTTP protocol for uvicorn (request limits,
informational responses) and the start-up of uvicorn or granian with the settings' limits."""
